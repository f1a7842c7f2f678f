/**
 * However a connection ends, `disconnect` runs exactly once, each joined
 * channel's `leave` runs exactly once (reason "disconnected" when the
 * connection closes), and nothing outlives the connection: no subscription
 * (`broker.subscribers`), no registration (`broadcaster.connected`).
 *
 * The connection's finalizers run in reverse order of acquisition: the
 * channels' scopes (`leave`, unsubscribe), then `disconnect`, then the
 * registration. So once `connected` has dropped, every hook that will ever run
 * for that connection has run, and the log can be checked for "exactly once".
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import type { Socket } from "node:net"
import type WebSocket from "ws"
import { hangingConnect } from "./utils/hangingConnect.js"
import type { RawClient } from "./utils/rawClient.js"
import { closedAs, connect, eventually, goAway } from "./utils/rawClient.js"
import type { TestServer } from "./utils/server.js"
import { rawTransports, startServer, transports } from "./utils/server.js"

interface Faults {
  /** `"<user> <topic>"` pairs whose `leave` dies. */
  readonly leave?: ReadonlyArray<string>
  /** Users whose `disconnect` dies. */
  readonly disconnect?: ReadonlyArray<string>
}

/**
 * A handler that records every `leave` and `disconnect` (with the `Clock`
 * time of the `disconnect`), and echoes what is pushed to it.
 */
const makeHandler = (faults: Faults = {}) => {
  const log: Array<string> = []
  const disconnectedAt: Array<number> = []
  const layer = ChannelHandler.layer({
    connect: (info) => Effect.succeed({ id: info.params["id"], assigns: { user: info.params["user"] ?? "?" } }),
    join: (conn) => Effect.succeed(conn.allowJoin()),
    incoming: (conn, event) => conn.reply(event, "ok", event.payload),
    leave: (conn, reason) =>
      Effect.suspend(() => {
        const user = String(conn.socket.assigns["user"])
        log.push(`leave ${user} ${conn.topic} ${reason}`)
        return faults.leave?.includes(`${user} ${conn.topic}`) ? Effect.die(new Error("leave hook died")) : Effect.void
      }),
    disconnect: (socket) =>
      Effect.gen(function*() {
        const user = String(socket.assigns["user"])
        disconnectedAt.push(yield* Clock.currentTimeMillis)
        log.push(`disconnect ${user}`)
        if (faults.disconnect?.includes(user)) return yield* Effect.die(new Error("disconnect hook died"))
      })
  })
  return { log, disconnectedAt, layer }
}

/** A raw client of `user` joined to room:1 and room:2. */
const joined = (server: TestServer, user: string, query = "") =>
  Effect.gen(function*() {
    const client = yield* connect(server.socketUrl, { query: `vsn=2.0.0&user=${user}${query}` })
    yield* client.send(["1", "1", "room:1", "phx_join", {}])
    yield* client.send(["2", "2", "room:2", "phx_join", {}])
    yield* client.next((m) => m[1] === "2")
    return client
  })

const tcpSocket = (client: RawClient) => (client.ws as unknown as { readonly _socket: Socket })._socket

/** What the log must hold for `user` once its connection has closed: one leave per channel, then one disconnect. */
const closedOnce = (user: string) => [
  `leave ${user} room:1 disconnected`,
  `leave ${user} room:2 disconnected`,
  `disconnect ${user}`
]

/**
 * Waits until only `remaining` connections are registered, then checks that
 * each of `users` left each channel once and disconnected once (after its
 * leaves), and that the subscriptions are back to `remaining`.
 */
const settled = (
  server: TestServer,
  log: ReadonlyArray<string>,
  users: ReadonlyArray<string>,
  remaining = 0
) =>
  Effect.gen(function*() {
    yield* eventually(server.broadcaster.connected, (n) => n === remaining)
    for (const user of users) {
      const lines = log.filter((line) => line.split(" ")[1] === user)
      // Every leave (in whatever order the channels closed), then disconnect.
      expect([...lines.slice(0, -1)].sort().concat(lines.slice(-1))).toEqual(closedOnce(user))
    }
    expect(yield* server.broker.subscribers("room:1")).toBe(remaining)
    expect(yield* server.broker.subscribers("room:2")).toBe(remaining)
  })

/** The client can still push and get the reply. */
const echoes = (client: RawClient, ref: string) =>
  Effect.gen(function*() {
    yield* client.send(["1", ref, "room:1", "echo", { ref }])
    expect((yield* client.next((m) => m[1] === ref))[4]).toEqual({ status: "ok", response: { ref } })
  })

/** Counts the `event` broadcasts a client receives (their payload's `n`), and waits for them. */
const tally = (ws: WebSocket, event: string) => {
  const seen: Array<number> = []
  const waiters = new Set<() => void>()
  ws.on("message", (data) => {
    const text = String(data)
    if (!text.includes(`"${event}"`)) return
    const [, , , name, payload] = JSON.parse(text) as [unknown, unknown, unknown, string, { n: number }]
    if (name !== event) return
    seen.push(payload.n)
    for (const waiter of waiters) waiter()
  })
  const reached = (count: number, timeout = 5000) =>
    Effect.async<void>((resume) => {
      const check = () => {
        if (seen.length < count) return
        cleanup()
        resume(Effect.void)
      }
      const timer = setTimeout(() => {
        cleanup()
        resume(Effect.dieMessage(`received ${seen.length} ${event} of ${count} in ${timeout} ms`))
      }, timeout)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
      return Effect.sync(cleanup)
    })
  return { seen, reached }
}

interface Logged {
  readonly level: string
  readonly message: string
  readonly cause: Cause.Cause<unknown>
}

/**
 * Records, for the rest of the scope, what is logged, instead of printing it
 * (the server's fibers log there too when the server is started after).
 */
const captureLogs = Effect.gen(function*() {
  const logs: Array<Logged> = []
  const logger = Logger.make(({ cause, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    logs.push({ level: logLevel.label, message: parts.map(String).join(" "), cause })
  })
  yield* Effect.locallyScopedWith(FiberRef.currentLoggers, () => HashSet.make(logger))
  return logs
})

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe.each(rawTransports)("lifecycle over %s", (transport) => {
  it.scopedLive("client close frame 1000: each leave and disconnect once, nothing left", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      expect(yield* server.broker.subscribers("room:1")).toBe(1)
      expect(yield* server.broadcaster.connected).toBe(1)
      yield* goAway(client, 1000)
      yield* settled(server, log, ["ada"])
    }))

  it.scopedLive.skipIf(transport === "longpoll")("client close frame 1001 (a browser tab going away)", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      client.ws.close(1001)
      yield* settled(server, log, ["ada"])
    }))

  it.scopedLive.skipIf(transport === "longpoll")("TCP reset (RST), no close frame", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      tcpSocket(client).resetAndDestroy()
      yield* settled(server, log, ["ada"])
    }))

  it.scopedLive.skipIf(transport === "longpoll")("TCP close (FIN) with no close frame: ws.terminate()", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      client.ws.terminate()
      yield* settled(server, log, ["ada"])
    }))

  it.scopedLive("server-side broadcaster.disconnect(id): every connection of that id, and only those", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const first = yield* joined(server, "ada1", "&id=user:ada")
      const second = yield* joined(server, "ada2", "&id=user:ada")
      const other = yield* joined(server, "bob", "&id=user:bob")
      yield* server.broadcaster.disconnect("user:ada")
      expect(yield* first.closed).toEqual(closedAs(first, 1001, "disconnected by the server"))
      expect(yield* second.closed).toMatchObject(closedAs(second, 1001))
      yield* settled(server, log, ["ada1", "ada2"], 1)
      expect(log.filter((line) => line.includes("bob"))).toEqual([])
      yield* echoes(other, "still-here")
    }))

  it.scopedLive("a connection ended during a join ends what the join started: its scope closes, its subscription goes", () =>
    Effect.gen(function*() {
      const joining = yield* Deferred.make<void>()
      const scopeClosed = yield* Deferred.make<void>()
      const handler = ChannelHandler.layer({
        join: (conn) =>
          Effect.zipRight(
            Scope.addFinalizer(conn.scope, Deferred.succeed(scopeClosed, undefined)),
            Effect.zipRight(Deferred.succeed(joining, undefined), Effect.never)
          )
      })
      const serverScope = yield* Scope.make()
      const server = yield* Scope.extend(startServer(handler, { transport, logLevel: false }), serverScope)
      const client = yield* connect(server.socketUrl)
      yield* client.send(["1", "1", "room:slow", "phx_join", {}])
      yield* Deferred.await(joining)
      expect(yield* server.broker.subscribers("room:slow")).toBe(1)
      yield* Scope.close(serverScope, Exit.void)
      yield* Deferred.await(scopeClosed).pipe(
        Effect.timeoutFail({ duration: 5000, onTimeout: () => new Error("the channel's scope was not closed") })
      )
      expect(yield* server.broker.subscribers("room:slow")).toBe(0)
    }), 30_000)

  it.scopedLive("a connection whose connect hook never answers does not hold the server's shutdown", () =>
    Effect.gen(function*() {
      const { layer: handler, started } = yield* hangingConnect()
      const serverScope = yield* Scope.make()
      const server = yield* Scope.extend(startServer(handler, { transport, logLevel: false }), serverScope)
      const attempt = yield* Effect.fork(Effect.scoped(connect(server.socketUrl)))
      yield* Deferred.await(started)
      const start = Date.now()
      yield* Scope.close(serverScope, Exit.void).pipe(
        Effect.timeoutFail({ duration: 5000, onTimeout: () => new Error("the shutdown waited for the connect hook") })
      )
      expect(Date.now() - start).toBeLessThan(5000)
      // The client's attempt ends without a connection: answered 503, as every request during shutdown.
      const exit = yield* Effect.exit(Effect.timeoutFail(attempt.await, { duration: 5000, onTimeout: () => "still waiting" }))
      const failed = Exit.isSuccess(exit) && Exit.isFailure(exit.value) ? Cause.failureOption(exit.value.cause) : undefined
      expect(failed !== undefined && failed._tag === "Some" ? failed.value.status : undefined).toBe(503)
    }), 30_000)

  it.scopedLive("no fiber started for the connection outlives it; its channels' fibers are interrupted by the close", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      // Every fiber of the server (the connections' too: they inherit the
      // supervisor from the runtime the server captured) is tracked.
      const tracker = yield* Supervisor.track
      const server = yield* startServer(layer, { transport }).pipe(Effect.supervised(tracker))
      const baseline = new Set(yield* tracker.value)
      const client = yield* joined(server, "ada")
      // A pushed event: room:1's fiber now lingers, waiting for the next one.
      yield* echoes(client, "busy")
      const started = (yield* tracker.value).filter((fiber) => !baseline.has(fiber))
      const channelFibers = started.filter((fiber) =>
        HashMap.has(fiber.getFiberRef(FiberRef.currentLogAnnotations), "topic")
      )
      expect(channelFibers.length).toBeGreaterThan(0)
      yield* goAway(client)
      yield* settled(server, log, ["ada"])
      yield* eventually(
        Effect.map(tracker.value, (fibers) => fibers.filter((fiber) => !baseline.has(fiber)).length),
        (n) => n === 0
      )
      for (const fiber of started) expect(fiber.unsafePoll()).not.toBeNull()
      // Ended by the connection's close, not by running out of work.
      for (const fiber of channelFibers) {
        const exit = fiber.unsafePoll()!
        expect(Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)).toBe(true)
      }
    }))

  // A long-poll client sends no heartbeats: its session ends when it is not polled (longpoll.test.ts).
  it.scopedLive.skipIf(transport === "longpoll")("heartbeat timeout (real clock, 300 ms)", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, heartbeatTimeout: "300 millis" })
      const client = yield* joined(server, "ada")
      expect(yield* client.closed).toEqual({ code: 1000, reason: "heartbeat timeout" })
      yield* settled(server, log, ["ada"])
    }))

  // Over long-poll, the queue of a session that does not poll: longpoll.test.ts.
  it.scopedLive.skipIf(transport === "longpoll")("a client that stops reading is dropped at outboundBufferLimit; a reading neighbour gets every broadcast", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, outboundBufferLimit: 64 * 1024 })
      const slow = yield* joined(server, "slow")
      const fast = yield* joined(server, "fast")
      const fastSeen = tally(fast.ws, "big")
      tcpSocket(slow).pause()
      const data = "x".repeat(512 * 1024)
      // One broadcast at a time, each once the reading client has it: the
      // reading client's buffer is empty at every broadcast, while the
      // kernel's buffers (here up to 32 MiB received, 4 MiB sent) fill up for
      // the client that does not read, then the server's buffer does.
      let sent = 0
      while (!log.includes("disconnect slow")) {
        if (sent === 400) return yield* Effect.dieMessage(`the stalled client was not dropped after ${sent} broadcasts`)
        yield* server.broadcaster.broadcast("room:1", "big", { n: ++sent, data })
        yield* fastSeen.reached(sent)
      }
      // The reading client goes on receiving (paced as well: a burst of
      // 512 KiB broadcasts would exceed a 64 KiB bound for any client).
      for (let i = 0; i < 10; i++) {
        yield* server.broadcaster.broadcast("room:1", "big", { n: ++sent, data })
        yield* fastSeen.reached(sent)
      }
      expect(fastSeen.seen).toEqual(range(1, sent))
      yield* settled(server, log, ["slow"], 1)
      expect(log.filter((line) => line.includes("fast"))).toEqual([])
      yield* echoes(fast, "fast-ok")
      // The stalled client was dropped without a close handshake: once it
      // reads again, it sees the connection end abnormally.
      tcpSocket(slow).resume()
      expect((yield* slow.closed).code).toBe(1006)
    }), 30_000)

  // Frames written to a WebSocket; a long-poll POST carries at most 100 (longpoll.test.ts).
  it.scopedLive.skipIf(transport === "longpoll")("an inbound flood over inboundQueueLimit is closed with 1008; the neighbour is unaffected", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, inboundQueueLimit: 10 })
      const flooder = yield* joined(server, "flood")
      const neighbour = yield* joined(server, "calm")
      const frame = JSON.stringify(["1", "x", "room:1", "echo", {}])
      for (let i = 0; i < 5000; i++) flooder.ws.send(frame)
      expect(yield* flooder.closed).toEqual({ code: 1008, reason: "too many messages queued" })
      yield* settled(server, log, ["flood"], 1)
      yield* echoes(neighbour, "ok")
      yield* server.broadcaster.broadcast("room:1", "after", {})
      expect((yield* neighbour.next((m) => m[3] === "after"))[2]).toBe("room:1")
    }))

  it.scopedLive("a dying leave or disconnect hook is logged and affects no other connection", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      const { layer, log } = makeHandler({ leave: ["bad room:2", "good room:2"], disconnect: ["bad"] })
      const server = yield* startServer(layer, { transport })
      const bad = yield* joined(server, "bad")
      const good = yield* joined(server, "good")
      yield* goAway(bad)
      // The leave of room:2 died, that of room:1 ran all the same, and so did disconnect.
      yield* settled(server, log, ["bad"], 1)
      const failures = logs.filter((entry) => entry.level === "ERROR")
      expect(failures.map((entry) => entry.message).sort()).toEqual(["disconnect failed", "leave failed"])
      for (const entry of failures) {
        expect(Cause.isDie(entry.cause)).toBe(true)
        expect(Cause.pretty(entry.cause)).toMatch(/(leave|disconnect) hook died/)
      }
      // The other connection goes on, in both channels.
      yield* echoes(good, "good-1")
      yield* server.broadcaster.broadcast("room:2", "news", { n: 1 })
      expect((yield* good.next((m) => m[3] === "news"))[4]).toEqual({ n: 1 })
      // A leave hook that dies on phx_leave: the client still gets its reply and phx_close.
      yield* good.send(["2", "bye", "room:2", "phx_leave", {}])
      expect((yield* good.next((m) => m[1] === "bye"))[4]).toEqual({ status: "ok", response: {} })
      expect(yield* good.next((m) => m[3] === "phx_close")).toEqual(["2", "2", "room:2", "phx_close", {}])
      yield* eventually(Effect.sync(() => logs.filter((entry) => entry.message === "leave failed").length), (n) => n === 2)
      expect(log.filter((line) => line.includes("good"))).toEqual(["leave good room:2 left"])
      expect(yield* server.broker.subscribers("room:2")).toBe(0)
      yield* echoes(good, "good-2")
      yield* goAway(good)
      yield* eventually(server.broadcaster.connected, (n) => n === 0)
      expect(log.filter((line) => line.includes("good"))).toEqual([
        "leave good room:2 left",
        "leave good room:1 disconnected",
        "disconnect good"
      ])
    }))
})

/**
 * The silence check under `TestClock`: the broadcaster's sweeper (one fiber
 * for all connections, forked when the layer is built) sleeps on the `Clock`,
 * and each connection stamps what it receives with the `Clock` of its own
 * fiber. Both inherit the test's services, the connection's fiber from the
 * runtime the server captured when its layer was built in the test; the
 * `disconnect` hook, run in the connection's fiber, reads the test time.
 * Frames are awaited with callbacks and real timers, never `Effect.sleep`.
 * "Still open" is proven without sending anything (which would reset the
 * timer): a broadcast sent after the clock moved reaches the client, which has
 * seen no close.
 */
describe.each(transports)("heartbeat under TestClock, on a real socket, over %s", (transport) => {
  const probe = (server: TestServer, client: RawClient, n: number) =>
    Effect.gen(function*() {
      yield* server.broadcaster.broadcast("room:1", "probe", { n })
      expect(yield* client.next((m) => m[3] === "probe")).toEqual([null, null, "room:1", "probe", { n }])
      expect(client.ws.readyState).toBe(client.ws.OPEN)
    })

  it.scoped("open after 59 s of silence; closed at 60 s, disconnect once, at 60 s of test time", () =>
    Effect.gen(function*() {
      const { disconnectedAt, layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      let closes = 0
      client.ws.on("close", () => closes++)
      yield* TestClock.adjust("59 seconds")
      yield* probe(server, client, 1)
      expect(closes).toBe(0)
      yield* TestClock.adjust("1 second")
      expect(yield* client.closed).toEqual({ code: 1000, reason: "heartbeat timeout" })
      yield* settled(server, log, ["ada"])
      expect(disconnectedAt).toEqual([60_000])
      expect(closes).toBe(1)
    }))

  it.scoped("a heartbeat at 50 s keeps it open at 100 s and 109 s; closed at 110 s", () =>
    Effect.gen(function*() {
      const { disconnectedAt, layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      yield* TestClock.adjust("50 seconds")
      yield* client.send([null, "hb", "phoenix", "heartbeat", {}])
      expect(yield* client.next((m) => m[1] === "hb")).toEqual([null, "hb", "phoenix", "phx_reply", { status: "ok", response: {} }])
      yield* TestClock.adjust("50 seconds")
      yield* probe(server, client, 1)
      yield* TestClock.adjust("9 seconds")
      yield* probe(server, client, 2)
      yield* TestClock.adjust("1 second")
      expect((yield* client.closed).reason).toBe("heartbeat timeout")
      yield* settled(server, log, ["ada"])
      expect(disconnectedAt).toEqual([110_000])
    }))

  it.scoped("heartbeatTimeout shortens the window: 5 s", () =>
    Effect.gen(function*() {
      const { disconnectedAt, layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, heartbeatTimeout: "5 seconds" })
      const client = yield* joined(server, "ada")
      yield* TestClock.adjust("4 seconds")
      yield* probe(server, client, 1)
      yield* TestClock.adjust("1 second")
      expect((yield* client.closed).reason).toBe("heartbeat timeout")
      yield* settled(server, log, ["ada"])
      expect(disconnectedAt).toEqual([5_000])
    }))
})

describe("a channel's fiber", () => {
  it.scopedLive("lingers while events keep coming, one fiber for all; is given back once idle for a second; a later event starts another", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const tracker = yield* Supervisor.track
      const server = yield* startServer(layer).pipe(Effect.supervised(tracker))
      const client = yield* joined(server, "ada")
      // After the joins: the connection's fiber and the topics' are older.
      const baseline = new Set(yield* tracker.value)
      const channelFibers = Effect.map(tracker.value, (fibers) =>
        fibers.filter((fiber) =>
          !baseline.has(fiber) && HashMap.has(fiber.getFiberRef(FiberRef.currentLogAnnotations), "topic")
        ))
      // Six events 400 ms apart: 2 s in all, longer than the linger, shorter gaps.
      yield* echoes(client, "e0")
      const [first, ...others] = yield* channelFibers
      expect(first).toBeDefined()
      expect(others).toEqual([])
      for (let i = 1; i < 6; i++) {
        yield* Effect.sleep("400 millis")
        yield* echoes(client, `e${i}`)
        expect(yield* channelFibers).toEqual([first])
      }
      // Idle: given back after the linger, having run out of work (not interrupted).
      yield* eventually(Effect.sync(() => first!.unsafePoll()), (exit) => exit !== null, 3_000)
      expect(Exit.isSuccess(first!.unsafePoll()!)).toBe(true)
      expect(yield* channelFibers).toEqual([])
      yield* echoes(client, "later")
      const [again] = yield* channelFibers
      expect(again).toBeDefined()
      expect(again).not.toBe(first)
    }))
})
