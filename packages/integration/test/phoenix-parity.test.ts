/**
 * What Phoenix's own channel tests (`websocket_channels_test.exs`) expect,
 * over real sockets: pushes and broadcasts made in `leave`, reply refs,
 * join and event logs with filtered parameters, `intercept`/`handleOut`, and
 * messages to a channel from outside its client (`conn.fork`,
 * `conn.subscribe`), each ended with the channel.
 */
import { ChannelRouter } from "@effect-channels/core"
import type { ChannelConn } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as HashSet from "effect/HashSet"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import type { Socket } from "node:net"
import { join as joinChannel, socket as phoenixSocket, until } from "./utils/phoenixClient.js"
import type { RawClient } from "./utils/rawClient.js"
import { connect, eventually } from "./utils/rawClient.js"
import type { TestServer } from "./utils/server.js"
import { startServer, transports } from "./utils/server.js"

const userOf = (conn: ChannelConn.ChannelConn) => String(conn.socket.assigns["user"])

/**
 * Phoenix's test `RoomChannel`, in our API: an after-join broadcast and push,
 * `new_msg` intercepted (each recipient gets it with its own name, or not at
 * all when it is hidden from it), a push and a broadcast in `leave`; plus a
 * ticking channel and a channel subscribed to the user's notifications.
 */
const makeHandler = () => {
  const log: Array<string> = []
  const layer = ChannelRouter.layer({
    "room:*": {
      join: (conn, event) =>
        Effect.gen(function*() {
          if (event.topic === "room:refused") return conn.refuseJoin({ reason: "refused" })
          // Phoenix's `send(self(), :after_join)`: sent once the join reply is out.
          yield* conn.fork(Effect.zipRight(
            conn.broadcast("user_entered", { user: userOf(conn) }),
            conn.push("joined", { status: "connected" })
          ))
          return conn.allowJoin()
        }),
      incoming: (conn, event) => {
        switch (event.event) {
          case "new_msg":
            return Effect.zipRight(conn.broadcast("new_msg", event.payload), conn.reply(event, "ok", {}))
          case "whisper":
            return Effect.zipRight(conn.broadcastFrom("new_msg", event.payload), conn.reply(event, "ok", {}))
          case "shout":
            return conn.broadcast("shout", event.payload)
          case "boom":
            return Effect.die(new Error("boom"))
          case "go":
            return conn.leave
          default:
            return conn.reply(event, "ok", event.payload)
        }
      },
      intercept: {
        events: ["new_msg", "explode"],
        handleOut: (conn, event, payload) => {
          if (event === "explode") return Effect.die(new Error("handleOut died"))
          const message = payload as { readonly hidden_from?: string }
          return Effect.succeed(
            message.hidden_from === userOf(conn)
              ? Option.none()
              : Option.some({ ...message, seen_by: userOf(conn) })
          )
        }
      },
      leave: (conn, reason) =>
        Effect.gen(function*() {
          log.push(`leave ${userOf(conn)} ${conn.topic} ${reason}`)
          yield* conn.push("you_left", { message: "bye!" })
          yield* conn.broadcastFrom("user_left", { user: userOf(conn), reason })
        })
    },
    "ticker:*": {
      join: (conn) =>
        Effect.gen(function*() {
          let n = 0
          yield* conn.fork(
            Effect.suspend(() => conn.push("tick", { n: ++n })).pipe(
              Effect.repeat(Schedule.spaced("20 millis")),
              Effect.onInterrupt(() => Effect.sync(() => log.push(`ticker ${userOf(conn)} interrupted`)))
            )
          )
          return conn.allowJoin()
        })
    },
    "user:*": {
      join: (conn) => Effect.as(conn.subscribe(`notifications:${userOf(conn)}`), conn.allowJoin())
    }
  }, {
    connect: (info) => Effect.succeed({ assigns: { user: info.params["user"] ?? "?" } })
  })
  return { layer, log }
}

const tcpSocket = (client: RawClient) => (client.ws as unknown as { readonly _socket: Socket })._socket

/** A raw V2 client of `user`, joined to `topic` with join ref (and ref) `ref`, past its after-join messages. */
const joined = (server: TestServer, user: string, topic = "room:1", ref = "1") =>
  Effect.gen(function*() {
    const client = yield* connect(server.socketUrl, { query: `vsn=2.0.0&user=${user}` })
    yield* client.send([ref, ref, topic, "phx_join", {}])
    expect(yield* client.next((m) => m[1] === ref)).toEqual([ref, ref, topic, "phx_reply", { status: "ok", response: {} }])
    if (topic.startsWith("room:")) {
      // Past its after-join push and broadcast, which may come in either order.
      yield* eventually(Effect.sync(() => client.received()), (all) =>
        all.some((m) => m[3] === "joined") &&
        all.some((m) => m[3] === "user_entered" && (m[4] as { user: string }).user === user))
      yield* client.drain
    }
    return client
  })

interface Logged {
  readonly level: string
  readonly message: string
}

/** Records what is logged for the rest of the scope, from `minimum` up (the server's fibers inherit it). */
const captureLogs = (minimum: LogLevel.LogLevel = LogLevel.Info) =>
  Effect.gen(function*() {
    const logs: Array<Logged> = []
    const logger = Logger.make(({ logLevel, message }) => {
      const parts = Array.isArray(message) ? message : [message]
      logs.push({ level: logLevel.label, message: parts.map(String).join(" ") })
    })
    yield* Effect.locallyScopedWith(FiberRef.currentLoggers, () => HashSet.make(logger))
    yield* Effect.locallyScopedWith(FiberRef.currentMinimumLogLevel, () => minimum)
    return logs
  })

describe.each(transports)("Phoenix parity over %s", (transport) => {
  describe("pushes and broadcasts made in leave", () => {
    it.scopedLive("phx_leave: the push of leave, then the ok reply, then phx_close (Phoenix's you_left)", () =>
      Effect.gen(function*() {
        const { layer, log } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada")
        expect(yield* ada.drain).toEqual([])
        yield* ada.send(["1", "2", "room:1", "phx_leave", {}])
        const frames = [yield* ada.next(), yield* ada.next(), yield* ada.next()]
        expect(frames).toEqual([
          ["1", null, "room:1", "you_left", { message: "bye!" }],
          ["1", "2", "room:1", "phx_reply", { status: "ok", response: {} }],
          ["1", "1", "room:1", "phx_close", {}]
        ])
        expect(log).toEqual(["leave ada room:1 left"])
        // Then the topic is unmatched, as in Phoenix's test.
        yield* ada.send(["1", "3", "room:1", "new_msg", { body: "Should ignore" }])
        expect(yield* ada.next()).toEqual([null, "3", "room:1", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
      }))

    it.scopedLive("the phoenix client sees the push of leave, then its channel closes, on a server-side leave", () =>
      Effect.gen(function*() {
        // (On `channel.leave()` the phoenix client closes the channel at once,
        // without waiting for the reply: a client-side leave's pushes reach
        // clients that wait for it, as Phoenix's own test client does.)
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const socket = yield* phoenixSocket(server.socketUrl, { params: { user: "ada" } })
        const [room] = yield* joinChannel(socket, "room:1")
        const seen: Array<unknown> = []
        room.on("you_left", (payload) => {
          seen.push(payload)
        })
        room.onClose(() => {
          seen.push("closed")
        })
        room.push("go", {})
        yield* until((tick) => room.onClose(tick), () => seen.includes("closed"), "the channel's close")
        expect(seen).toEqual([{ message: "bye!" }, "closed"])
      }))

    it.scopedLive("a server-side leave and a crash: the push of leave, then phx_close or phx_error", () =>
      Effect.gen(function*() {
        const { layer, log } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada")
        yield* ada.send(["1", "2", "room:1", "go", {}])
        const ending = (m: ReadonlyArray<unknown>) => ["you_left", "phx_close", "phx_error"].includes(m[3] as string)
        expect([yield* ada.next(ending), yield* ada.next(ending)]).toEqual([
          ["1", null, "room:1", "you_left", { message: "bye!" }],
          ["1", "1", "room:1", "phx_close", {}]
        ])
        yield* ada.send(["3", "3", "room:2", "phx_join", {}])
        yield* ada.next((m) => m[3] === "joined")
        yield* ada.send(["3", "4", "room:2", "boom", {}])
        expect([yield* ada.next(ending), yield* ada.next(ending)]).toEqual([
          ["3", null, "room:2", "you_left", { message: "bye!" }],
          ["3", "3", "room:2", "phx_error", { reason: "channel_crash" }]
        ])
        expect(log).toEqual(["leave ada room:1 closed", "leave ada room:2 crashed"])
      }))

    it.scopedLive("a user_left broadcast from leave reaches the others: on phx_leave, on a close, on a TCP reset", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const bob = yield* joined(server, "bob")
        const userLeft = (user: string) => bob.next((m) => m[3] === "user_left" && (m[4] as { user: string }).user === user)

        const ada = yield* joined(server, "ada")
        yield* ada.send(["1", "2", "room:1", "phx_leave", {}])
        expect(yield* userLeft("ada")).toEqual([null, null, "room:1", "user_left", { user: "ada", reason: "left" }])
        // The leaver is unsubscribed before its leave runs: it does not get its own broadcast.
        expect(yield* ada.drain).toEqual([
          ["1", null, "room:1", "you_left", { message: "bye!" }],
          ["1", "2", "room:1", "phx_reply", { status: "ok", response: {} }],
          ["1", "1", "room:1", "phx_close", {}]
        ])

        const eve = yield* joined(server, "eve")
        eve.ws.close(1000)
        expect((yield* userLeft("eve"))[4]).toEqual({ user: "eve", reason: "disconnected" })

        const dan = yield* joined(server, "dan")
        tcpSocket(dan).resetAndDestroy()
        expect((yield* userLeft("dan"))[4]).toEqual({ user: "dan", reason: "disconnected" })
        // Bob, and Ada, who left the channel but not the socket.
        yield* eventually(server.broadcaster.connected, (n) => n === 2)
        expect(yield* server.broker.subscribers("room:1")).toBe(1)
      }))

  })

  describe("reply refs", () => {
    it.scopedLive("a join to an unmatched topic is answered with join_ref null, whatever join ref it carried", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const client = yield* connect(server.socketUrl)
        yield* client.send(["11", "1", "unmatched-topic", "phx_join", {}])
        expect(yield* client.next()).toEqual([null, "1", "unmatched-topic", "phx_reply", {
          status: "error",
          response: { reason: "unmatched topic" }
        }])
        // A refused join keeps its join ref, as in Phoenix.
        yield* client.send(["12", "2", "room:refused", "phx_join", {}])
        expect(yield* client.next()).toEqual(["12", "2", "room:refused", "phx_reply", { status: "error", response: { reason: "refused" } }])
        // And a message for a topic not joined: join_ref null too.
        yield* client.send(["12", "3", "room:refused", "new_msg", {}])
        expect(yield* client.next()).toEqual([null, "3", "room:refused", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
      }))

    it.scopedLive("a V1 client that joins without a join_ref gets phx_close and phx_error with ref null", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const client = yield* connect(server.socketUrl, { query: "vsn=1.0.0&user=ada" })
        const next = (event: string) => Effect.map(client.next((m) => (m as unknown as { event: string }).event === event), (m) => m as unknown)
        yield* client.send(JSON.stringify({ topic: "room:1", event: "phx_join", payload: {}, ref: "1" }))
        yield* next("joined")
        yield* client.send(JSON.stringify({ topic: "room:1", event: "phx_leave", payload: {}, ref: "2" }))
        expect(yield* next("phx_close")).toEqual({ topic: "room:1", event: "phx_close", payload: {}, ref: null })
        yield* client.send(JSON.stringify({ topic: "room:2", event: "phx_join", payload: {}, ref: "3" }))
        yield* next("joined")
        yield* client.send(JSON.stringify({ topic: "room:2", event: "boom", payload: {}, ref: "4" }))
        expect(yield* next("phx_error")).toEqual({ topic: "room:2", event: "phx_error", payload: { reason: "channel_crash" }, ref: null })
      }))
  })

  describe("logs", () => {
    it.scopedLive("joins at Info and handled events at Debug, as Phoenix, password filtered", () =>
      Effect.gen(function*() {
        const logs = yield* captureLogs(LogLevel.Debug)
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
        yield* client.send(["1", "1", "room:lobby", "phx_join", { join: "yes", password: "no" }])
        yield* client.next((m) => m[1] === "1")
        yield* client.send(["1", "2", "room:lobby", "echo", { in: "yes", nested: { password: "no", passwords: ["x"] } }])
        yield* client.next((m) => m[1] === "2")
        yield* client.send(["3", "3", "room:refused", "phx_join", { password: "no" }])
        yield* client.next((m) => m[1] === "3")
        const joinedLog = yield* eventually(
          Effect.sync(() => logs.filter((entry) => entry.message.startsWith("JOINED room:lobby"))),
          (found) => found.length === 1
        )
        expect(joinedLog[0]!.level).toBe("INFO")
        expect(joinedLog[0]!.message).toMatch(/^JOINED room:lobby in \d+(µs|ms)\n {2}Parameters: \{"join":"yes","password":"\[FILTERED\]"\}$/)
        const handled = yield* eventually(
          Effect.sync(() => logs.filter((entry) => entry.message.startsWith("HANDLED echo INCOMING ON room:lobby"))),
          (found) => found.length === 1
        )
        expect(handled[0]!.level).toBe("DEBUG")
        expect(handled[0]!.message).toMatch(
          /^HANDLED echo INCOMING ON room:lobby in \d+(µs|ms)\n {2}Parameters: \{"in":"yes","nested":\{"password":"\[FILTERED\]","passwords":"\[FILTERED\]"\}\}$/
        )
        const refused = yield* eventually(
          Effect.sync(() => logs.filter((entry) => entry.message.startsWith("REFUSED JOIN room:refused"))),
          (found) => found.length === 1
        )
        expect(refused[0]!.message).toContain(`Parameters: {"password":"[FILTERED]"}`)
        expect(logs.some((entry) => entry.message.includes(`"no"`))).toBe(false)
      }))

    it.scopedLive("logLevel and filterParameters: levels per kind, a list of keys, false for no logs", () =>
      Effect.gen(function*() {
        const logs = yield* captureLogs(LogLevel.Debug)
        const { layer } = makeHandler()
        const custom = yield* startServer(layer, {
          transport,
          logLevel: { join: "Warning", event: false },
          filterParameters: ["token"]
        })
        const client = yield* connect(custom.socketUrl, { query: "vsn=2.0.0&user=ada" })
        yield* client.send(["1", "1", "room:1", "phx_join", { token: "secret", password: "shown" }])
        yield* client.next((m) => m[1] === "1")
        yield* client.send(["1", "2", "room:1", "echo", {}])
        yield* client.next((m) => m[1] === "2")
        const joinedLog = yield* eventually(
          Effect.sync(() => logs.filter((entry) => entry.message.startsWith("JOINED room:1"))),
          (found) => found.length === 1
        )
        expect(joinedLog[0]!.level).toBe("WARN")
        expect(joinedLog[0]!.message).toContain(`Parameters: {"token":"[FILTERED]","password":"shown"}`)
        expect(logs.filter((entry) => entry.message.startsWith("HANDLED"))).toEqual([])

        const silent = yield* startServer(makeHandler().layer, { transport, logLevel: false })
        const other = yield* connect(silent.socketUrl, { query: "vsn=2.0.0&user=bob" })
        const before = logs.length
        yield* other.send(["1", "1", "room:1", "phx_join", {}])
        yield* other.next((m) => m[1] === "1")
        yield* other.send(["1", "2", "room:1", "echo", {}])
        yield* other.next((m) => m[1] === "2")
        expect(logs.slice(before).filter((entry) => /^(JOINED|HANDLED|REFUSED)/.test(entry.message))).toEqual([])
      }))
  })

  describe("intercept and handleOut", () => {
    it.scopedLive("an intercepted broadcast reaches each subscriber through its handleOut: changed, or dropped", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada", "room:1", "1")
        const bob = yield* joined(server, "bob", "room:1", "5")
        yield* ada.send(["1", "2", "room:1", "new_msg", { body: "hi!" }])
        // A push to each recipient, with its own join ref and payload.
        expect(yield* ada.next((m) => m[3] === "new_msg")).toEqual(["1", null, "room:1", "new_msg", { body: "hi!", seen_by: "ada" }])
        expect(yield* bob.next((m) => m[3] === "new_msg")).toEqual(["5", null, "room:1", "new_msg", { body: "hi!", seen_by: "bob" }])
        // Dropped for the one it is hidden from.
        yield* ada.send(["1", "3", "room:1", "new_msg", { body: "secret", hidden_from: "bob" }])
        expect((yield* ada.next((m) => m[3] === "new_msg"))[4]).toEqual({ body: "secret", hidden_from: "bob", seen_by: "ada" })
        expect((yield* bob.drain).filter((m) => m[3] === "new_msg")).toEqual([])
        // From the ChannelBroadcaster too; broadcastFrom skips the sender before its handleOut.
        yield* server.broadcaster.broadcast("room:1", "new_msg", { body: "from the server" })
        expect((yield* bob.next((m) => m[3] === "new_msg"))[4]).toEqual({ body: "from the server", seen_by: "bob" })
        expect((yield* ada.next((m) => m[3] === "new_msg"))[4]).toEqual({ body: "from the server", seen_by: "ada" })
        yield* ada.send(["1", "4", "room:1", "whisper", { body: "psst" }])
        expect((yield* bob.next((m) => m[3] === "new_msg"))[4]).toEqual({ body: "psst", seen_by: "bob" })
        expect((yield* ada.drain).filter((m) => m[3] === "new_msg")).toEqual([])
        // Events not intercepted keep the fastlane: one broadcast frame.
        yield* ada.send(["1", "5", "room:1", "shout", { loud: true }])
        expect(yield* bob.next((m) => m[3] === "shout")).toEqual([null, null, "room:1", "shout", { loud: true }])
      }))

    it.scopedLive("a failing handleOut crashes that channel only: phx_error, and the others go on", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada")
        yield* ada.send(["7", "7", "room:2", "phx_join", {}])
        yield* ada.next((m) => m[3] === "joined" && m[2] === "room:2")
        yield* server.broadcaster.broadcast("room:1", "explode", {})
        expect(yield* ada.next((m) => m[3] === "phx_error")).toEqual(["1", "1", "room:1", "phx_error", { reason: "channel_crash" }])
        yield* ada.send(["7", "8", "room:2", "echo", { still: "here" }])
        expect((yield* ada.next((m) => m[1] === "8"))[4]).toEqual({ status: "ok", response: { still: "here" } })
      }))
  })

  describe("messages from outside the client", () => {
    it.scopedLive("after join: what a fiber forked in join sends comes after the join reply", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
        yield* client.send(["1", "1", "room:1", "phx_join", {}])
        const frames = [yield* client.next(), yield* client.next()]
        expect(frames[0]).toEqual(["1", "1", "room:1", "phx_reply", { status: "ok", response: {} }])
        expect(frames.slice(1)).toEqual([["1", null, "room:1", "joined", { status: "connected" }]])
      }))

    it.scopedLive("a periodic push from a forked fiber: ticks until the channel ends, then the fiber is interrupted", () =>
      Effect.gen(function*() {
        const { layer, log } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada", "ticker:1")
        for (const n of [1, 2, 3]) {
          expect(yield* ada.next((m) => m[3] === "tick")).toEqual(["1", null, "ticker:1", "tick", { n }])
        }
        yield* ada.send(["1", "2", "ticker:1", "phx_leave", {}])
        yield* ada.next((m) => m[3] === "phx_close")
        yield* eventually(Effect.sync(() => log), (lines) => lines.includes("ticker ada interrupted"))
        yield* Effect.sleep("100 millis")
        expect((yield* ada.drain).filter((m) => m[3] === "tick")).toEqual([])

        // And when the connection is reset.
        const bob = yield* joined(server, "bob", "ticker:1")
        yield* bob.next((m) => m[3] === "tick")
        tcpSocket(bob).resetAndDestroy()
        yield* eventually(Effect.sync(() => log), (lines) => lines.includes("ticker bob interrupted"))
      }))

    it.scopedLive("conn.subscribe: another topic's broadcasts reach the client on the channel's topic, until the channel ends", () =>
      Effect.gen(function*() {
        const { layer } = makeHandler()
        const server = yield* startServer(layer, { transport })
        const ada = yield* joined(server, "ada", "user:ada")
        expect(yield* server.broker.subscribers("notifications:ada")).toBe(1)
        yield* server.broadcaster.broadcast("notifications:ada", "note", { n: 1 })
        expect(yield* ada.next()).toEqual(["1", null, "user:ada", "note", { n: 1 }])
        yield* server.broadcaster.broadcast("notifications:bob", "note", { n: 2 })
        expect(yield* ada.drain).toEqual([])
        yield* ada.send(["1", "2", "user:ada", "phx_leave", {}])
        yield* ada.next((m) => m[3] === "phx_close")
        expect(yield* server.broker.subscribers("notifications:ada")).toBe(0)
        yield* server.broadcaster.broadcast("notifications:ada", "note", { n: 3 })
        expect(yield* ada.drain).toEqual([])

        const again = yield* joined(server, "ada", "user:ada")
        expect(yield* server.broker.subscribers("notifications:ada")).toBe(1)
        tcpSocket(again).resetAndDestroy()
        yield* eventually(server.broker.subscribers("notifications:ada"), (n) => n === 0)
      }))
  })
})

/**
 * Where the server closes its connections itself (`NodeChannelServer`, and
 * the `ws` server of `NodeWebSocketServer`), the transport is still open when
 * the channels end; the portable server's sockets are closed by the HTTP
 * server first, and what `leave` pushes then goes nowhere.
 */
describe.each(["server", "route"] as const)("server shutdown over %s", (transport) => {
it.scopedLive("on server shutdown the transport is still open: the push of leave goes out before the 1001 close", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const serverScope = yield* Scope.make()
      const server = yield* Scope.extend(startServer(layer, { transport }), serverScope)
      const ada = yield* joined(server, "ada")
      yield* Scope.close(serverScope, Exit.void)
      expect((yield* ada.closed).code).toBe(1001)
      expect(log).toEqual(["leave ada room:1 disconnected"])
      expect(ada.received()).toContainEqual(["1", null, "room:1", "you_left", { message: "bye!" }])
    }))
})
