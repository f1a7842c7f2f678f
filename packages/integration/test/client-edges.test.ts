/**
 * The official `phoenix` client, unchanged, against the server, for each way
 * of serving the socket: who receives what, binary payloads both ways, the V1
 * serializer through the client's own `vsn`/`encode`/`decode` options, and
 * the client's recovery: rejoin after `phx_error`, reconnect after
 * `disconnect(id)`, heartbeats that keep a connection alive.
 */
import { ChannelEvent, ChannelHandler } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { eventually } from "./utils/rawClient.js"
import { join, next, push, record, socket, until, v1 } from "./utils/phoenixClient.js"
import { startServer, transports } from "./utils/server.js"

const makeHandler = () => {
  const log: Array<string> = []
  const layer = ChannelHandler.layer({
    connect: (info) =>
      info.params["token"] === "bad"
        ? Effect.fail(new ConnectRefused({ reason: "bad token" }))
        : Effect.succeed({
          id: info.params["id"],
          assigns: {
            user: info.params["user"] ?? null,
            token: info.authToken._tag === "Some" ? info.authToken.value : null
          }
        }),
    join: (conn, event) =>
      Effect.sync(() => {
        log.push(`join ${event.topic}`)
        return event.topic === "room:secret"
          ? conn.refuseJoin({ reason: "unauthorized" })
          : conn.allowJoin({
            user: conn.socket.assigns["user"],
            token: conn.socket.assigns["token"],
            params: event.payload
          })
      }),
    incoming: (conn, event) => {
      switch (event.event) {
        case "echo":
          return conn.reply(event, "ok", event.payload)
        case "deny":
          return conn.reply(event, "error", { reason: "denied" })
        case "poke":
          return conn.push("poked", event.payload)
        case "mark":
          return conn.broadcast("mark", event.payload)
        case "whisper":
          return conn.broadcastFrom("whisper", event.payload)
        case "bytes:push":
          return conn.push("bytes", new Uint8Array([1, 2, 3]))
        case "bytes:reply":
          return conn.reply(event, "ok", new Uint8Array([4, 5, 6]))
        case "bytes:echo":
          return conn.reply(event, "ok", {
            binary: ChannelEvent.isBinary(event),
            bytes: ChannelEvent.isBinary(event) ? Array.from(event.payload as Uint8Array) : null
          })
        case "crash":
          return Effect.die("handler crash")
        case "bye":
          return conn.leave
        default:
          return Effect.void
      }
    },
    leave: (conn, reason) => Effect.sync(() => log.push(`leave ${conn.topic} ${reason}`))
  })
  return { log, layer }
}

const bytes = (buffer: unknown) => {
  expect(buffer).toBeInstanceOf(ArrayBuffer)
  return Array.from(new Uint8Array(buffer as ArrayBuffer))
}

describe.each(transports)("the phoenix client over %s, further", (transport) => {
  const setup = (options: Parameters<typeof startServer>[1] = {}) =>
    Effect.gen(function*() {
      const handler = makeHandler()
      const server = yield* startServer(handler.layer, { transport, ...options })
      return { ...handler, server }
    })

  it.scopedLive("push reaches one member only; broadcastFrom every member but the sender", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const [ada] = yield* join(yield* socket(server.socketUrl), "room:1")
      const [bob] = yield* join(yield* socket(server.socketUrl), "room:1")
      const adaSaw = record(ada)
      const bobSaw = record(bob)
      const poked = next(ada, "poked")
      ada.push("poke", { n: 1 })
      expect(yield* poked).toEqual({ n: 1 })
      const whispered = next(bob, "whisper")
      ada.push("whisper", { n: 2 })
      expect(yield* whispered).toEqual({ n: 2 })
      // A broadcast from ada after both: once both have it, neither can still get what was not theirs.
      const marks = Effect.all([next(ada, "mark"), next(bob, "mark")])
      ada.push("mark", { n: 3 })
      expect(yield* marks).toEqual([{ n: 3 }, { n: 3 }])
      expect(adaSaw.map(({ event }) => event)).toEqual(["poked", "mark"])
      expect(bobSaw.map(({ event }) => event)).toEqual(["whisper", "mark"])
    }))

  it.scopedLive("binary: a server push and a reply arrive as ArrayBuffers; a client push as bytes", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const [room] = yield* join(yield* socket(server.socketUrl), "room:1")
      const pushed = next(room, "bytes")
      room.push("bytes:push", {})
      expect(bytes(yield* pushed)).toEqual([1, 2, 3])
      const [status, response] = yield* push(room, "bytes:reply", {})
      expect(status).toBe("ok")
      expect(bytes(response)).toEqual([4, 5, 6])
      expect(yield* push(room, "bytes:echo", new Uint8Array([9, 0, 255]).buffer)).toEqual([
        "ok",
        { binary: true, bytes: [9, 0, 255] }
      ])
      expect(yield* push(room, "bytes:echo", { json: true })).toEqual(["ok", { binary: false, bytes: null }])
    }))

  it.scopedLive("V1 through the client's vsn, encode and decode options, next to a V2 client", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const [old, response] = yield* join(yield* socket(server.socketUrl, { ...v1, params: { user: "ada" } }), "room:1", { v: 1 })
      expect(response).toEqual({ user: "ada", token: null, params: { v: 1 } })
      expect(yield* push(old, "echo", { n: 1 })).toEqual(["ok", { n: 1 }])
      expect(yield* push(old, "deny", {})).toEqual(["error", { reason: "denied" }])
      const poked = next(old, "poked")
      old.push("poke", { n: 2 })
      expect(yield* poked).toEqual({ n: 2 })
      const [current] = yield* join(yield* socket(server.socketUrl), "room:1")
      const marks = Effect.all([next(old, "mark"), next(current, "mark")])
      current.push("mark", { from: "v2" })
      expect(yield* marks).toEqual([{ from: "v2" }, { from: "v2" }])
      const news = Effect.all([next(old, "news"), next(current, "news")])
      yield* server.broadcaster.broadcast("room:1", "news", { from: "server" })
      expect(yield* news).toEqual([{ from: "server" }, { from: "server" }])
      expect(yield* Effect.flip(join(yield* socket(server.socketUrl, v1), "room:secret"))).toEqual({ reason: "unauthorized" })
    }))

  it.scopedLive("params and authToken reach connect; socket assigns are visible in join", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* socket(server.socketUrl, { params: { user: "ada" }, authToken: "secret-token" })
      const [, response] = yield* join(client, "room:1", { hello: "join" })
      expect(response).toEqual({ user: "ada", token: "secret-token", params: { hello: "join" } })
    }))

  it.scopedLive("a refused connect (403) never opens the socket", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* socket(server.socketUrl, { params: { token: "bad" }, reconnectAfterMs: () => 50 })
      let errors = 0
      let opened = false
      yield* until((tick) => {
        client.onError(() => {
          errors++
          tick()
        })
        client.onOpen(() => {
          opened = true
          tick()
        })
      }, () => errors >= 2 || opened, "two connection errors")
      expect(opened).toBe(false)
      expect(yield* server.broadcaster.connected).toBe(0)
    }))

  it.scopedLive("a crashed channel: phx_error, then the client rejoins and the channel works again", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* socket(server.socketUrl, { rejoinAfterMs: () => 20 })
      const [room] = yield* join(client, "room:1")
      const [other] = yield* join(client, "room:2")
      let errors = 0
      room.onError(() => {
        errors++
      })
      room.push("crash", {})
      // The client marks the channel errored on phx_error, then rejoins it.
      yield* eventually(Effect.sync(() => errors > 0 && room.state === "joined"), (rejoined) => rejoined)
      expect(errors).toBe(1)
      expect(yield* push(room, "echo", { back: true })).toEqual(["ok", { back: true }])
      expect(yield* push(other, "echo", { untouched: true })).toEqual(["ok", { untouched: true }])
      expect(log).toEqual(["join room:1", "join room:2", "leave room:1 crashed", "join room:1"])
    }))

  it.scopedLive("a server-side leave closes the client's channel for good; a client leave is ok and runs leave", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* socket(server.socketUrl, { rejoinAfterMs: () => 20 })
      const [room] = yield* join(client, "room:1")
      const [other] = yield* join(client, "room:2")
      let closed = 0
      yield* until((tick) => {
        room.onClose(() => {
          closed++
          tick()
        })
        room.push("bye", {})
      }, () => closed > 0, "the channel's close")
      expect(room.state).toBe("closed")
      const left = yield* Effect.async<unknown>((resume) => {
        other.leave().receive("ok", (response: unknown) => resume(Effect.succeed(response)))
      }).pipe(Effect.timeout(2000))
      expect(left).toEqual({})
      expect(other.state).toBe("closed")
      // Neither rejoins: a third channel's round trip comes after anything the first two would send.
      const [third] = yield* join(client, "room:3")
      expect(yield* push(third, "echo", {})).toEqual(["ok", {}])
      expect(log).toEqual(["join room:1", "join room:2", "leave room:1 closed", "leave room:2 left", "join room:3"])
    }))

  it.scopedLive("disconnect(id): the client sees 1001, reconnects and rejoins; the anonymous one is untouched", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* socket(server.socketUrl, { params: { id: "user:1" }, reconnectAfterMs: () => 20, rejoinAfterMs: () => 20 })
      const anonymous = yield* socket(server.socketUrl)
      const [room] = yield* join(client, "room:1")
      const [lobby] = yield* join(anonymous, "room:1")
      yield* eventually(server.broadcaster.connected, (n) => n === 2)
      const codes: Array<number> = []
      let reopened = 0
      client.onClose((event) => {
        codes.push(event.code)
      })
      client.onOpen(() => {
        reopened++
      })
      yield* server.broadcaster.disconnect("user:1")
      yield* eventually(Effect.sync(() => reopened > 0 && room.state === "joined"), (rejoined) => rejoined)
      expect(codes).toEqual([1001])
      expect(yield* push(room, "echo", { again: true })).toEqual(["ok", { again: true }])
      expect(yield* push(lobby, "echo", { still: true })).toEqual(["ok", { still: true }])
      yield* eventually(server.broadcaster.connected, (n) => n === 2)
      expect(log.filter((line) => line.startsWith("leave"))).toEqual(["leave room:1 disconnected"])
    }))

  it.scopedLive("the client's heartbeats keep a connection alive past the heartbeat timeout", () =>
    Effect.gen(function*() {
      const { server } = yield* setup({ heartbeatTimeout: "300 millis" })
      const client = yield* socket(server.socketUrl, { heartbeatIntervalMs: 40 })
      const [room] = yield* join(client, "room:1")
      let replies = 0
      let closes = 0
      yield* until((tick) => {
        client.onMessage((message) => {
          const { event, topic } = message as { readonly topic: string; readonly event: string }
          if (topic === "phoenix" && event === "phx_reply") replies++
          tick()
        })
        client.onClose(() => {
          closes++
          tick()
        })
      }, () => replies >= 20 || closes > 0, "20 heartbeat replies")
      // 20 intervals of 40 ms: well past 300 ms, and not one close.
      expect(closes).toBe(0)
      expect(yield* push(room, "echo", { alive: true })).toEqual(["ok", { alive: true }])
    }))

  it.scopedLive("broadcaster.connected counts phoenix clients and goes back down when they leave", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const first = yield* socket(server.socketUrl)
      yield* join(first, "room:1")
      const second = yield* socket(server.socketUrl)
      yield* join(second, "room:1")
      expect(yield* server.broadcaster.connected).toBe(2)
      second.disconnect()
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
      first.disconnect()
      yield* eventually(server.broadcaster.connected, (n) => n === 0)
    }))
})
