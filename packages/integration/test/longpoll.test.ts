/**
 * The long-poll endpoint: the official phoenix client on `LongPoll` as a full
 * member (joins, pushes, replies, broadcasts both ways with WebSocket
 * clients, binary, presence), its WebSocket fallback, and the endpoint's
 * rules on the wire (sessions, tokens, POST batches, bounds, CORS).
 */
import { ChannelHandler, Presence } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as ConfigProvider from "effect/ConfigProvider"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import { type Channel, Presence as ClientPresence, Socket } from "phoenix"
import WebSocket from "ws"
import { hangingConnect } from "./utils/hangingConnect.js"
import * as LongPoll from "./utils/longPoll.js"
import { join, next, push, socket as wsSocket, until } from "./utils/phoenixClient.js"
import { connect as wsConnect, eventually } from "./utils/rawClient.js"
import { startServer, type TestServer } from "./utils/server.js"

const makeHandler = () => {
  const log: Array<string> = []
  const layer = ChannelHandler.layer({
    connect: (info) =>
      info.params["user"] === "mallory"
        ? Effect.fail(new ConnectRefused({ reason: "no" }))
        : Effect.succeed({
          id: info.params["id"],
          assigns: {
            user: info.params["user"] ?? "?",
            transport: info.transport,
            token: info.authToken._tag === "Some" ? info.authToken.value : null
          }
        }),
    join: (conn) =>
      Effect.gen(function*() {
        const presence = yield* Presence.Presence
        if (conn.topic.startsWith("rooms:")) yield* presence.track(conn, conn.topic, String(conn.socket.assigns["user"]), {})
        return conn.allowJoin({ transport: conn.socket.assigns["transport"], token: conn.socket.assigns["token"] })
      }),
    incoming: (conn, event) =>
      Effect.gen(function*() {
        switch (event.event) {
          case "echo":
            return yield* conn.reply(event, "ok", event.payload)
          case "shout":
            return yield* Effect.zipRight(conn.broadcast("shout", event.payload), conn.reply(event, "ok"))
          case "bytes":
            yield* conn.push("bytes", new Uint8Array([0, 1, 2, 254, 255]))
            return yield* conn.reply(event, "ok")
          case "count": {
            const count = Number((yield* conn.assigns)["count"] ?? 0) + 1
            return yield* conn.assign("count", count)
          }
          case "total":
            return yield* conn.reply(event, "ok", { count: Number((yield* conn.assigns)["count"] ?? 0) })
        }
      }),
    leave: (conn, reason) => Effect.sync(() => log.push(`leave ${conn.socket.assigns["user"]} ${conn.topic} ${reason}`)),
    disconnect: (socket) => Effect.sync(() => log.push(`disconnect ${socket.assigns["user"]}`))
  }).pipe(Layer.provide(Presence.layer({ batchWindow: "20 millis" })))
  return { log, layer }
}

/** The keys of the client's presence list, sorted. */
const keysOf = (presence: ClientPresence) => presence.list((key) => key).sort()

/** Joins `topic` with the client's `Presence` on the channel from before the join: it misses no state. */
const joinWatching = (socket: Socket, topic: string) => {
  const channel = socket.channel(topic, {})
  const watched = presenceOf(channel)
  return Effect.map(
    Effect.async<void>((resume) => {
      channel.join().receive("ok", () => resume(Effect.void))
    }).pipe(Effect.timeoutFail({ duration: 5000, onTimeout: () => new Error(`join of ${topic}`) }), Effect.orDie),
    () => ({ channel, ...watched })
  )
}

const presenceOf = (channel: Channel) => {
  const presence = new ClientPresence(channel)
  const changes = new Set<() => void>()
  presence.onSync(() => {
    for (const change of changes) change()
  })
  const sees = (keys: ReadonlyArray<string>) =>
    until((tick) => changes.add(tick), () => JSON.stringify(keysOf(presence)) === JSON.stringify(keys), `presence ${keys}`, 5000)
  return { presence, sees }
}

describe.each(["server", "route"] as const)("the phoenix client on LongPoll, over %s", (transport) => {
  it.scopedLive("joins, pushes and gets replies, receives binary, with the auth token of its header", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* LongPoll.socket(server.socketUrl, { params: { user: "ada" }, authToken: "secret-ada" })
      const [lobby, response] = yield* join(client, "rooms:lobby")
      expect(response).toEqual({ transport: "longpoll", token: "secret-ada" })
      expect(yield* push(lobby, "echo", { n: 1, text: "héllo" })).toEqual(["ok", { n: 1, text: "héllo" }])
      const bytes = yield* Effect.fork(next(lobby, "bytes"))
      expect(yield* push(lobby, "bytes", {})).toEqual(["ok", {}])
      expect(new Uint8Array((yield* bytes) as ArrayBuffer)).toEqual(new Uint8Array([0, 1, 2, 254, 255]))
      // A client push of bytes travels as a base64 line and reaches the handler as bytes.
      const echoed = yield* push(lobby, "echo", new Uint8Array([9, 8, 7]).buffer)
      expect(echoed[0]).toBe("ok")
      expect(new Uint8Array(echoed[1] as ArrayBuffer)).toEqual(new Uint8Array([9, 8, 7]))
    }))

  it.scopedLive("broadcasts reach WebSocket clients and back; each sees the other's presence", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const ada = yield* LongPoll.socket(server.socketUrl, { params: { user: "ada" } })
      const bob = yield* wsSocket(server.socketUrl, { params: { user: "bob" } })
      const { channel: adaLobby, ...adaSees } = yield* joinWatching(ada, "rooms:lobby")
      const { channel: bobLobby, ...bobSees } = yield* joinWatching(bob, "rooms:lobby")
      yield* adaSees.sees(["ada", "bob"])
      yield* bobSees.sees(["ada", "bob"])

      const atBob = yield* Effect.fork(next(bobLobby, "shout"))
      const ownAtAda = yield* Effect.fork(next(adaLobby, "shout"))
      yield* push(adaLobby, "shout", { from: "ada" })
      expect(yield* atBob).toEqual({ from: "ada" })
      expect(yield* ownAtAda).toEqual({ from: "ada" })
      const atAda = yield* Effect.fork(next(adaLobby, "shout"))
      yield* push(bobLobby, "shout", { from: "bob" })
      expect(yield* atAda).toEqual({ from: "bob" })
      const fromServer = yield* Effect.fork(next(adaLobby, "news"))
      yield* server.broadcaster.broadcast("rooms:lobby", "news", { n: 1 })
      expect(yield* fromServer).toEqual({ n: 1 })

      // A long-poll client that disconnects just stops polling: its session ends
      // 1.5 windows later (tested under TestClock below). A WebSocket one is seen leaving at once.
      bob.disconnect()
      yield* adaSees.sees(["ada"])
    }))
})

describe("longPollFallbackMs", () => {
  /** A WebSocket whose upgrade fails, as behind a proxy that breaks them: it asks for a path nobody upgrades. */
  class BlockedWebSocket extends WebSocket {
    constructor(url: string, protocols?: string | Array<string>) {
      super(url.replace("/socket/websocket", "/blocked/websocket"), protocols)
    }
  }

  it.scopedLive("a client whose WebSocket upgrade fails ends up on long-poll, joins and chats with a WebSocket client", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport: "server" })
      const ada = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const socket = new Socket(server.socketUrl, {
            transport: BlockedWebSocket,
            longPollFallbackMs: 200,
            params: { user: "ada" }
          })
          socket.connect()
          return socket
        }),
        (socket) => Effect.sync(() => socket.disconnect())
      )
      const bob = yield* wsSocket(server.socketUrl, { params: { user: "bob" } })
      const [adaLobby, response] = yield* join(ada, "rooms:lobby", {}, 10_000)
      expect(response).toEqual({ transport: "longpoll", token: null })
      const internals = ada as unknown as { transport: unknown; transportName: (transport: unknown) => string }
      expect(internals.transportName(internals.transport)).toBe("LongPoll")
      const [bobLobby] = yield* join(bob, "rooms:lobby")
      const atAda = yield* Effect.fork(next(adaLobby, "shout"))
      yield* push(bobLobby, "shout", { from: "bob" })
      expect(yield* atAda).toEqual({ from: "bob" })
    }))
})

describe("long-poll sessions on the wire", () => {
  it.scoped("a session not polled for 1.5 windows ends (TestClock): disconnect runs once, its presence leaves", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport: "server" })
      const watcher = yield* wsConnect(server.socketUrl, { query: "vsn=2.0.0&user=bob" })
      yield* watcher.send(["1", "1", "rooms:lobby", "phx_join", {}])
      yield* watcher.next((m) => m[1] === "1")
      const ada = yield* LongPoll.connect(server.httpUrl, { query: "vsn=2.0.0&user=ada" })
      yield* ada.send(["1", "1", "rooms:lobby", "phx_join", {}])
      expect((yield* ada.next((m) => m[1] === "1"))[4]).toEqual({ status: "ok", response: { transport: "longpoll", token: null } })
      yield* TestClock.adjust("100 millis")
      yield* watcher.next((m) => m[3] === "presence_diff" && JSON.stringify(m[4]).includes("ada"))
      yield* ada.abandon
      // Polled last at 100 ms: open at 14.1 s; ended at 15.1 s, found by the next sweep (each second).
      yield* TestClock.adjust("14 seconds")
      expect(yield* server.broadcaster.connected).toBe(2)
      expect(log).toEqual([])
      yield* TestClock.adjust("2 seconds")
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
      expect(log).toEqual(["leave ada rooms:lobby disconnected", "disconnect ada"])
      yield* TestClock.adjust("100 millis")
      const diff = yield* watcher.next((m) => m[3] === "presence_diff")
      expect(Object.keys((diff[4] as { leaves: object }).leaves)).toEqual(["ada"])
      // The session is gone: its token names nothing now.
      expect(yield* LongPoll.request(ada.url)).toEqual({ status: 410 })
    }))

  it.scoped("altered, guessed and expired tokens reach no session", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport: "server", longPoll: { tokenMaxAge: "1 minute" } }); const ada = yield* LongPoll.connect(server.httpUrl, { query: "vsn=2.0.0&user=ada" });
      yield* ada.send(["1", "1", "rooms:lobby", "phx_join", {}]); yield* ada.next((m) => m[1] === "1");
      const endpoint = `${server.httpUrl}/longpoll?vsn=2.0.0`
      const [id, issued, signature] = ada.token.split(".") as [string, string, string]
      const flip = (text: string) => (text[0] === "A" ? "B" : "A") + text.slice(1)
      const forged = [
        `${flip(id)}.${issued}.${signature}`,
        `${id}.${(parseInt(issued, 36) + 60_000).toString(36)}.${signature}`,
        `${id}.${issued}.${flip(signature)}`,
        "guess.guess.guess"
      ]
      const post = (token: string) =>
        LongPoll.request(endpoint, {
          method: "POST",
          headers: { "content-type": "application/x-ndjson", "x-phoenix-longpoll-token": token },
          body: JSON.stringify(["1", "2", "rooms:lobby", "echo", { forged: true }])
        })
      for (const token of forged) {
        expect(yield* post(token)).toEqual({ status: 410 })
        // A GET with a token that does not verify opens a new session, as in Phoenix.
        const answer = yield* LongPoll.request(`${endpoint}&user=eve`, { headers: { "x-phoenix-longpoll-token": token } })
        expect(answer.status).toBe(410)
        expect(answer.token).not.toBe(ada.token)
      }
      // The real token, in the header, still works.
      expect(yield* post(ada.token)).toEqual({ status: 200, handled: 1 })
      expect((yield* ada.next((m) => m[1] === "2"))[4]).toEqual({ status: "ok", response: { forged: true } })
      yield* TestClock.adjust("61 seconds")
      expect(yield* post(ada.token)).toEqual({ status: 410 })

    }))

  it.scopedLive("a POST of 10,000 lines handles the first 100 and says so", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport: "server" })
      const ada = yield* LongPoll.connect(server.httpUrl, { query: "vsn=2.0.0&user=ada" })
      yield* ada.send(["1", "1", "rooms:lobby", "phx_join", {}])
      yield* ada.next((m) => m[1] === "1")
      const line = JSON.stringify(["1", null, "rooms:lobby", "count", {}])
      const body = Array.from({ length: 10_000 }, () => line).join("\n")
      expect(yield* LongPoll.request(ada.url, { method: "POST", headers: { "content-type": "application/x-ndjson" }, body }))
        .toEqual({ status: 200, handled: 100 })
      yield* ada.send(["1", "t", "rooms:lobby", "total", {}])
      expect((yield* ada.next((m) => m[1] === "t"))[4]).toEqual({ status: "ok", response: { count: 100 } })
      // A line that is neither JSON nor base64 is a bad request; a body that is not ndjson is one message.
      const post = (contentType: string, body: string) =>
        LongPoll.request(ada.url, { method: "POST", headers: { "content-type": contentType }, body })
      expect(yield* post("application/x-ndjson", "not base64!")).toEqual({ status: 400 })
      expect(yield* post("application/json", JSON.stringify(["1", "j", "rooms:lobby", "echo", { whole: true }])))
        .toEqual({ status: 200, handled: 1 })
      expect((yield* ada.next((m) => m[1] === "j"))[4]).toEqual({ status: "ok", response: { whole: true } })
    }))

  it.scopedLive("a refused connect is {status: 403} with HTTP 200; CORS preflight; other methods are 400", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport: "route" })
      const endpoint = `${server.httpUrl}/longpoll?vsn=2.0.0`
      expect(yield* LongPoll.request(`${endpoint}&user=mallory`)).toEqual({ status: 403 })
      expect(yield* LongPoll.request(`${server.httpUrl}/longpoll?vsn=3.0.0`)).toEqual({ status: 403 })
      expect(yield* LongPoll.request(endpoint, { headers: { origin: "https://elsewhere.example" } })).toEqual({ status: 403 })
      const preflight = yield* Effect.promise(() =>
        fetch(endpoint, {
          method: "OPTIONS",
          headers: { origin: "https://app.example", "access-control-request-headers": "x-phoenix-longpoll-token" }
        })
      )
      expect(preflight.status).toBe(200)
      expect(preflight.headers.get("access-control-allow-origin")).toBe("*")
      expect(preflight.headers.get("access-control-allow-headers")).toBe("x-phoenix-longpoll-token")
      expect(preflight.headers.get("access-control-allow-methods")).toBe("get, post, options")
      const put = yield* Effect.promise(() => fetch(endpoint, { method: "PUT" }))
      expect(put.status).toBe(400)
      expect(log).toEqual([])
      // `longPoll: false`: no endpoint.
      const without = yield* startServer(layer, { transport: "route", longPoll: false })
      const none = yield* Effect.promise(() => fetch(`${without.httpUrl}/longpoll?vsn=2.0.0`))
      expect(none.status).toBe(404)
    }))

  it.scopedLive("a poll waits for messages; a newer poll takes them, the older is answered 204 after its window", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport: "server", longPoll: { window: "400 millis" } })
      const opened = yield* LongPoll.request(`${server.httpUrl}/longpoll?vsn=2.0.0&user=ada`)
      const url = `${server.httpUrl}/longpoll?vsn=2.0.0&token=${opened.token}`
      yield* LongPoll.request(url, {
        method: "POST",
        headers: { "content-type": "application/x-ndjson" },
        body: JSON.stringify(["1", "1", "quiet:1", "phx_join", {}])
      })
      const first = yield* LongPoll.request(url)
      expect(first.status).toBe(200)
      expect(first.messages!.map((m) => JSON.parse(m)[3])).toContain("phx_reply")
      // Nothing queued: answered 204 after the window.
      const started = Date.now()
      expect(yield* LongPoll.request(url)).toEqual({ status: 204, token: opened.token, messages: [] })
      expect(Date.now() - started).toBeGreaterThanOrEqual(350)
      const older = yield* Effect.fork(LongPoll.request(url))
      yield* Effect.sleep("50 millis")
      const newer = yield* Effect.fork(LongPoll.request(url))
      yield* Effect.sleep("50 millis")
      yield* server.broadcaster.broadcast("quiet:1", "news", { n: 1 })
      const taken = yield* newer
      expect(taken.status).toBe(200)
      expect(taken.messages!.map((m) => JSON.parse(m))).toEqual([[null, null, "quiet:1", "news", { n: 1 }]])
      expect(yield* older).toEqual({ status: 204, token: opened.token, messages: [] })
    }))

  it.scopedLive("queued messages are bounded by outboundBufferLimit: a session that does not poll is dropped", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport: "server", outboundBufferLimit: 4096 })
      const ada = yield* LongPoll.connect(server.httpUrl, { query: "vsn=2.0.0&user=ada" })
      yield* ada.send(["1", "1", "rooms:lobby", "phx_join", {}])
      yield* ada.next((m) => m[1] === "1")
      yield* ada.abandon
      for (let n = 0; n < 100; n++) yield* server.broadcaster.broadcast("rooms:lobby", "news", { n, text: "x".repeat(100) })
      yield* eventually(server.broadcaster.connected, (n) => n === 0)
      expect(log).toEqual(["leave ada rooms:lobby disconnected", "disconnect ada"])
    }))

  it.scopedLive("the secret: from EFFECT_CHANNELS_SECRET, else a random one with a warning; nodes share tokens only with one secret", () =>
    Effect.gen(function*() {
      const warnings: Array<string> = []
      const logger = Logger.make(({ logLevel, message }) => {
        if (logLevel.label === "WARN") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      yield* Effect.locallyScopedWith(FiberRef.currentLoggers, () => HashSet.make(logger))
      const { layer } = makeHandler()
      const configured = ConfigProvider.fromMap(new Map([["EFFECT_CHANNELS_SECRET", "shared"]]))
      const one = yield* Effect.withConfigProvider(startServer(layer, { longPoll: {} }), configured)
      const two = yield* Effect.withConfigProvider(startServer(layer, { longPoll: {} }), configured)
      expect(warnings).toEqual([])
      const generated = yield* startServer(layer, { longPoll: {} })
      expect(warnings).toHaveLength(1)
      expect(warnings[0]).toMatch(/every node serving the same clients needs the same secret/)
      const ada = yield* LongPoll.connect(one.httpUrl, { query: "vsn=2.0.0&user=ada" })
      const at = (server: TestServer) => `${server.httpUrl}/longpoll?vsn=2.0.0&token=${encodeURIComponent(ada.token)}`
      // The same secret: the token verifies, the session is not there: gone, and the client opens one where it is.
      expect(yield* LongPoll.request(at(two))).toEqual({ status: 410 })
      // Another secret: the token names nothing there; a GET opens a session, as without a token.
      const elsewhere = yield* LongPoll.request(at(generated))
      expect(elsewhere.status).toBe(410)
      expect(elsewhere.token).toBeDefined()
      expect(elsewhere.token).not.toBe(ada.token)
    }))

  it.scopedLive("a client that goes away while its connect runs interrupts the connect; no session is left", () =>
    Effect.gen(function*() {
      for (const transport of ["server", "route"] as const) {
        const { awaitInterrupted, layer, started } = yield* hangingConnect()
        const server = yield* startServer(layer, { transport, logLevel: false })
        const abort = new AbortController()
        const request = fetch(`${server.httpUrl}/longpoll?vsn=2.0.0`, { signal: abort.signal }).catch((error) => error)
        yield* Deferred.await(started)
        abort.abort()
        yield* Effect.promise(() => request)
        yield* awaitInterrupted(`over ${transport}: the connect went on`, 5000)
        expect(yield* server.broadcaster.connected).toBe(0)
      }
    }))

  it.scopedLive("NodeChannelServer ends its sessions with the server: leave and disconnect run once", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const scope = yield* Scope.make()
      const server = yield* Scope.extend(startServer(layer, { transport: "server" }), scope)
      const ada = yield* Scope.extend(LongPoll.connect(server.httpUrl, { query: "vsn=2.0.0&user=ada" }), scope)
      yield* ada.send(["1", "1", "rooms:lobby", "phx_join", {}])
      yield* ada.next((m) => m[1] === "1")
      yield* Scope.close(scope, Exit.void)
      expect(log).toEqual(["leave ada rooms:lobby disconnected", "disconnect ada"])
    }))
})
