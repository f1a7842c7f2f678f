/**
 * More of PROTOCOL.md on real sockets, frame by frame, for each way of
 * serving the socket: what reaches whom (push, broadcastFrom, refused joins),
 * binary pushes and replies, stale join_refs after a rejoin, V1 clients,
 * malformed frames, refusals before the upgrade, subprotocols, the frame
 * size limit in bytes, socket ids and the connection count.
 *
 * What must not arrive is proven by a heartbeat sent after it: its reply is
 * the next frame.
 */
import { ChannelEvent, ChannelHandler } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { clientPush, decodeServerFrame } from "./utils/binary.js"
import { attemptUpgrade } from "./utils/http.js"
import { closedAs, connect, eventually, goAway, type RawClient } from "./utils/rawClient.js"
import { rawTransports, startServer } from "./utils/server.js"

const Shout = Schema.Struct({ text: Schema.String })

const makeHandler = () => {
  const log: Array<string> = []
  const layer = ChannelHandler.layer({
    connect: (info) =>
      info.params["token"] === "bad"
        ? Effect.fail(new ConnectRefused({ reason: "bad token" }))
        : Effect.succeed({ id: info.params["id"], assigns: { user: info.params["user"] ?? null } }),
    join: (conn, event) =>
      Effect.gen(function*() {
        const payload = event.payload as { readonly refuse?: boolean; readonly remember?: string }
        log.push(`join ${event.topic} ${conn.joinRef}`)
        if (payload.refuse === true) {
          // Held back until the join reply, then dropped with the refusal.
          yield* conn.push("secret", { to: "joiner" })
          yield* conn.broadcast("secret", { to: "topic" })
          return conn.refuseJoin({ reason: "refused" })
        }
        if (payload.remember !== undefined) yield* conn.socket.assign("remembered", payload.remember)
        return conn.allowJoin({
          user: conn.socket.assigns["user"] ?? null,
          remembered: conn.socket.assigns["remembered"] ?? null
        })
      }),
    incoming: (conn, event) =>
      Effect.gen(function*() {
        switch (event.event) {
          case "echo":
            return yield* conn.reply(event, "ok", event.payload)
          case "shout":
            return yield* conn.broadcast("shout", (yield* ChannelEvent.decodePayload(event, Shout)).text)
          case "poke":
            return yield* conn.push("poked", event.payload)
          case "whisper":
            return yield* conn.broadcastFrom("whisper", event.payload)
          case "bytes:push":
            return yield* conn.push("bytes", new Uint8Array([1, 2, 3]))
          case "bytes:reply":
            return yield* conn.reply(event, "ok", new Uint8Array([4, 5, 6]))
          case "bytes:echo":
            return yield* conn.reply(event, "ok", {
              binary: ChannelEvent.isBinary(event),
              bytes: Array.from(event.payload as Uint8Array)
            })
          case "bye":
            return yield* conn.leave
        }
      }),
    leave: (conn, reason) => Effect.sync(() => log.push(`leave ${conn.topic} ${conn.joinRef} ${reason}`))
  })
  return { log, layer }
}

const join = (topic: string, ref: string, payload: unknown = {}) => [ref, ref, topic, "phx_join", payload] as const

/** Joins and waits for the join reply; returns its payload. */
const joined = (client: RawClient, topic: string, ref: string, payload: unknown = {}) =>
  Effect.gen(function*() {
    yield* client.send([...join(topic, ref, payload)])
    return (yield* client.next((m) => m[1] === ref && m[3] === "phx_reply"))[4]
  })

describe.each(rawTransports)("protocol edges over %s", (transport) => {
  const setup = (options: Parameters<typeof startServer>[1] = {}) =>
    Effect.gen(function*() {
      const handler = makeHandler()
      const server = yield* startServer(handler.layer, { transport, ...options })
      return { ...handler, server }
    })

  it.scopedLive("push reaches its client only; broadcastFrom every member but the sender", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const ada = yield* connect(server.socketUrl)
      const bob = yield* connect(server.socketUrl)
      expect(yield* joined(ada, "room:1", "1")).toEqual({ status: "ok", response: { user: null, remembered: null } })
      yield* joined(bob, "room:1", "1")
      yield* ada.send(["1", "2", "room:1", "poke", { n: 1 }])
      expect(yield* ada.next()).toEqual(["1", null, "room:1", "poked", { n: 1 }])
      yield* ada.send(["1", "3", "room:1", "whisper", { n: 2 }])
      expect(yield* bob.next()).toEqual([null, null, "room:1", "whisper", { n: 2 }])
      // bob got neither the poke nor anything else; ada did not hear her whisper.
      expect(yield* bob.drain).toEqual([])
      expect(yield* ada.drain).toEqual([])
      // A broadcast, for comparison, reaches both.
      yield* bob.send(["1", "4", "room:1", "shout", { text: "hi" }])
      expect(yield* ada.next()).toEqual([null, null, "room:1", "shout", "hi"])
      expect(yield* bob.next()).toEqual([null, null, "room:1", "shout", "hi"])
    }))

  it.scopedLive("a refused join drops what its handler pushed and broadcast", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const member = yield* connect(server.socketUrl)
      const joiner = yield* connect(server.socketUrl)
      yield* joined(member, "room:1", "1")
      yield* joiner.send([...join("room:1", "1", { refuse: true })])
      expect(yield* joiner.next()).toEqual(["1", "1", "room:1", "phx_reply", { status: "error", response: { reason: "refused" } }])
      expect(yield* joiner.drain).toEqual([])
      expect(yield* member.drain).toEqual([])
    }))

  it.scopedLive("binary: a push is kind 0 with the join_ref, a reply kind 1, a client push arrives as bytes", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* joined(client, "room:1", "1")
      yield* client.send(["1", "2", "room:1", "bytes:push", {}])
      expect(decodeServerFrame(yield* client.nextBinary())).toEqual({
        kind: "push",
        joinRef: "1",
        topic: "room:1",
        event: "bytes",
        data: [1, 2, 3]
      })
      yield* client.send(["1", "3", "room:1", "bytes:reply", {}])
      expect(decodeServerFrame(yield* client.nextBinary())).toEqual({
        kind: "reply",
        joinRef: "1",
        ref: "3",
        topic: "room:1",
        status: "ok",
        data: [4, 5, 6]
      })
      yield* client.send(clientPush("1", "4", "room:1", "bytes:echo", [0, 255, 7]))
      expect(yield* client.next((m) => m[1] === "4")).toEqual(["1", "4", "room:1", "phx_reply", {
        status: "ok",
        response: { binary: true, bytes: [0, 255, 7] }
      }])
      // A binary push with a stale join_ref is dropped like a text one.
      yield* client.send(clientPush("0", "5", "room:1", "bytes:echo", [1]))
      expect(yield* client.drain).toEqual([])
    }))

  it.scopedLive("an invalid payload gets its error reply and the channel goes on", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* joined(client, "room:1", "1")
      yield* client.send(["1", "2", "room:1", "shout", { nope: true }])
      expect(yield* client.next()).toEqual(["1", "2", "room:1", "phx_reply", {
        status: "error",
        response: { reason: "invalid payload", path: ["text"], message: expect.any(String) }
      }])
      yield* client.send(["1", "3", "room:1", "echo", { still: "here" }])
      expect(yield* client.next()).toEqual(["1", "3", "room:1", "phx_reply", { status: "ok", response: { still: "here" } }])
      yield* client.send(["1", "4", "room:1", "shout", { text: "ok" }])
      expect(yield* client.next()).toEqual([null, null, "room:1", "shout", "ok"])
      expect(log).toEqual(["join room:1 1"])
    }))

  it.scopedLive("after a duplicate join the old join_ref is stale: its messages are dropped", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* joined(client, "room:1", "1")
      yield* client.send([...join("room:1", "2")])
      expect(yield* client.next()).toEqual(["1", "1", "room:1", "phx_close", {}])
      expect(yield* client.next()).toEqual(["2", "2", "room:1", "phx_reply", { status: "ok", response: { user: null, remembered: null } }])
      yield* client.send(["1", "3", "room:1", "echo", { old: true }])
      yield* client.send(["1", "4", "room:1", "phx_leave", {}])
      expect(yield* client.drain).toEqual([])
      yield* client.send(["2", "5", "room:1", "echo", { current: true }])
      expect(yield* client.next()).toEqual(["2", "5", "room:1", "phx_reply", { status: "ok", response: { current: true } }])
      expect(log).toEqual(["join room:1 1", "leave room:1 1 duplicate", "join room:1 2"])
    }))

  it.scopedLive("after a server-side leave the topic is unmatched, and can be joined again", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* joined(client, "room:1", "1")
      yield* client.send(["1", "2", "room:1", "bye", {}])
      expect(yield* client.next()).toEqual(["1", "1", "room:1", "phx_close", {}])
      yield* client.send(["1", "3", "room:1", "echo", {}])
      expect(yield* client.next()).toEqual([null, "3", "room:1", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
      expect(log).toEqual(["join room:1 1", "leave room:1 1 closed"])
      yield* joined(client, "room:1", "4")
      yield* client.send(["4", "5", "room:1", "echo", { again: true }])
      expect(yield* client.next()).toEqual(["4", "5", "room:1", "phx_reply", { status: "ok", response: { again: true } }])
    }))

  it.scopedLive("socket assigns: set by connect, and by one channel's join for the next", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
      expect(yield* joined(client, "room:1", "1", { remember: "from room:1" })).toEqual({
        status: "ok",
        response: { user: "ada", remembered: "from room:1" }
      })
      expect(yield* joined(client, "room:2", "2")).toEqual({
        status: "ok",
        response: { user: "ada", remembered: "from room:1" }
      })
      // Another connection has its own socket assigns.
      const other = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=bob" })
      expect(yield* joined(other, "room:2", "1")).toEqual({ status: "ok", response: { user: "bob", remembered: null } })
    }))

  it.scopedLive("heartbeat on another topic is an ordinary message: unmatched topic", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([null, "1", "room:1", "heartbeat", {}])
      expect(yield* client.next()).toEqual([null, "1", "room:1", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
    }))

  describe("malformed frames close the connection with 1007", () => {
    const closesWith1007 = (frame: Parameters<RawClient["send"]>[0], query?: string) =>
      Effect.gen(function*() {
        const { server } = yield* setup()
        const client = yield* connect(server.socketUrl, query === undefined ? {} : { query })
        const bystander = yield* connect(server.socketUrl)
        yield* client.send(frame)
        expect(yield* client.closed).toMatchObject(closedAs(client, 1007))
        // The server and its other connections go on.
        expect(yield* bystander.drain).toEqual([])
      })

    it.scopedLive("V2: an array of the wrong length", () => closesWith1007(JSON.stringify([null, "1", "phoenix", "heartbeat"])))
    it.scopedLive("V2: a JSON object", () =>
      closesWith1007(JSON.stringify({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1" })))
    it.scopedLive("V2: a number as ref", () => closesWith1007(JSON.stringify([null, 1, "phoenix", "heartbeat", {}])))
    it.scopedLive("V2: a binary frame of kind 1 (a reply)", () => closesWith1007(new Uint8Array([1, 0, 0, 0, 0])))
    it.scopedLive("V2: a binary header longer than the frame", () => closesWith1007(new Uint8Array([0, 9, 9, 9, 9, 1])))
    it.scopedLive("V1: a JSON array", () => closesWith1007(JSON.stringify([null, "1", "phoenix", "heartbeat", {}]), "vsn=1.0.0"))
    it.scopedLive("V1: a binary frame", () => closesWith1007(clientPush("1", "1", "room:1", "x", [1]), "vsn=1.0.0"))
    it.scopedLive("V1: an object without payload", () =>
      closesWith1007(JSON.stringify({ topic: "phoenix", event: "heartbeat", ref: "1" }), "vsn=1.0.0"))

    // A WebSocket text frame; long-poll messages arrive decoded, in a JSON body.
    it.scopedLive.skipIf(transport === "longpoll")("a text frame that is not UTF-8", () =>
      Effect.gen(function*() {
        const { server } = yield* setup()
        const client = yield* connect(server.socketUrl)
        client.ws.send(Buffer.from([0x5b, 0xff, 0xfe, 0x5d]), { binary: false })
        expect(yield* client.closed).toMatchObject(closedAs(client, 1007))
      }))
  })

  it.scopedLive("refusals before the upgrade: 403 with an empty body, 400 for a non-GET, 101 otherwise", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const { port } = server
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=3.0.0" })).toEqual({ status: 403, body: "" })
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=abc" })).toEqual({ status: 403, body: "" })
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=2.0.0&token=bad" })).toEqual({ status: 403, body: "" })
      expect(yield* attemptUpgrade({ port, headers: { Origin: "http://evil.example" } })).toEqual({ status: 403, body: "" })
      expect((yield* attemptUpgrade({ port, method: "POST" })).status).toBe(400)
      expect((yield* attemptUpgrade({ port, method: "PUT" })).status).toBe(400)
      expect((yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=2.1.0" })).status).toBe(101)
      expect((yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=1.1.0" })).status).toBe(101)
      expect((yield* attemptUpgrade({ port, path: "/socket/websocket" })).status).toBe(101)
      expect((yield* attemptUpgrade({ port, headers: { Origin: `http://127.0.0.1:${port}` } })).status).toBe(101)
      // Nothing refused was counted as a connection.
      yield* eventually(server.broadcaster.connected, (n) => n === 0)
    }))

  it.scopedLive.skipIf(transport === "longpoll")("subprotocols: phoenix is selected whatever the order offered; none offered, none selected", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const token = `base64url.bearer.phx.${Buffer.from("secret-token").toString("base64url")}`
      expect((yield* connect(server.socketUrl, { protocols: ["phoenix", token] })).ws.protocol).toBe("phoenix")
      expect((yield* connect(server.socketUrl, { protocols: ["phoenix"] })).ws.protocol).toBe("phoenix")
      expect((yield* connect(server.socketUrl)).ws.protocol).toBe("")
    }))

  it.scopedLive("the frame size limit counts bytes: at the limit passes, one byte over closes with 1009", () =>
    Effect.gen(function*() {
      const { server } = yield* setup({ maxFrameSize: 1024 })
      /** A heartbeat of exactly `bytes` bytes of UTF-8, padded with `char` (then "x"). */
      const heartbeat = (ref: string, bytes: number, char: string) => {
        const base = Buffer.byteLength(JSON.stringify([null, ref, "phoenix", "heartbeat", { pad: "" }]))
        const count = Math.floor((bytes - base) / Buffer.byteLength(char))
        const pad = char.repeat(count) + "x".repeat(bytes - base - count * Buffer.byteLength(char))
        const frame = JSON.stringify([null, ref, "phoenix", "heartbeat", { pad }])
        expect(Buffer.byteLength(frame)).toBe(bytes)
        return frame
      }
      // One, two, three and four bytes a character ("😀" is two UTF-16 units).
      for (const char of ["x", "é", "€", "😀"]) {
        const client = yield* connect(server.socketUrl)
        yield* client.send(heartbeat("1", 1024, char))
        expect(yield* client.next()).toEqual([null, "1", "phoenix", "phx_reply", { status: "ok", response: {} }])
        yield* client.send(heartbeat("2", 1025, char))
        expect(yield* client.closed).toMatchObject(closedAs(client, 1009))
      }
      // Binary frames too.
      const binary = yield* connect(server.socketUrl)
      yield* binary.send(new Uint8Array(1025))
      expect(yield* binary.closed).toMatchObject(closedAs(binary, 1009))
    }))

  it.scopedLive("socket id: disconnect(id) closes the connections with that id, not one without; connected counts", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      expect(yield* server.broadcaster.connected).toBe(0)
      const one = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:1" })
      const two = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:1" })
      const anonymous = yield* connect(server.socketUrl)
      yield* joined(anonymous, "room:1", "1")
      yield* eventually(server.broadcaster.connected, (n) => n === 3)
      yield* server.broadcaster.disconnect("user:1")
      expect(yield* one.closed).toMatchObject(closedAs(one, 1001))
      expect(yield* two.closed).toMatchObject(closedAs(two, 1001))
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
      yield* anonymous.send(["1", "2", "room:1", "echo", { alive: true }])
      expect(yield* anonymous.next()).toEqual(["1", "2", "room:1", "phx_reply", { status: "ok", response: { alive: true } }])
      // The id is free again: a new connection with it is counted and can be disconnected.
      const again = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:1" })
      yield* eventually(server.broadcaster.connected, (n) => n === 2)
      yield* server.broadcaster.disconnect("user:1")
      expect(yield* again.closed).toMatchObject(closedAs(again, 1001))
      yield* goAway(anonymous)
      if (anonymous.kind === "websocket") expect((yield* anonymous.closed).code).toBe(1000)
      yield* eventually(server.broadcaster.connected, (n) => n === 0)
    }))

  // The ways a WebSocket closes; a long-poll session's are in longpoll.test.ts.
  it.scopedLive.skipIf(transport === "longpoll")("broadcaster.connected counts open connections and returns to its value after they close", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const first = yield* connect(server.socketUrl)
      yield* first.drain
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
      const before = yield* server.broadcaster.connected
      const more = yield* Effect.all(Array.from({ length: 5 }, () => connect(server.socketUrl)))
      yield* Effect.forEach(more, (client) => client.drain, { discard: true })
      expect(yield* server.broadcaster.connected).toBe(before + 5)
      more[0]!.ws.close(1000)
      more[1]!.ws.close(1001)
      more[2]!.ws.terminate()
      more[3]!.ws.close(4000, "custom")
      yield* more[4]!.send("{broken")
      yield* eventually(server.broadcaster.connected, (n) => n === before)
      expect(yield* first.drain).toEqual([])
    }))
})

/** A V1 client: JSON objects, outgoing messages without join_ref. */
interface V1 {
  readonly topic: string
  readonly event: string
  readonly payload: unknown
  readonly ref: string | null
  readonly join_ref?: string | null
}

const v1 = (client: RawClient) => {
  let heartbeats = 0
  const self = {
    send: (message: V1) => client.send(JSON.stringify(message)),
    next: (predicate: (message: V1) => boolean = () => true) =>
      Effect.map(client.next((m) => predicate(m as unknown as V1)), (m) => m as unknown as V1),
    /** Sends a heartbeat; the frames received between `mark` and its reply. */
    since: (mark: number) =>
      Effect.gen(function*() {
        const ref = `hb-${++heartbeats}`
        yield* self.send({ topic: "phoenix", event: "heartbeat", payload: {}, ref })
        yield* self.next((m) => m.ref === ref)
        const frames = client.received().slice(mark) as unknown as ReadonlyArray<V1>
        expect(frames[frames.length - 1]).toEqual({ topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref })
        return frames.slice(0, -1)
      }),
    mark: () => client.received().length
  }
  return self
}

describe.each(rawTransports)("V1 over %s", (transport) => {
  it.scopedLive("no vsn is V1: heartbeat, join, reply, push, broadcast, unmatched topic, leave and close", () =>
    Effect.gen(function*() {
      const { log, layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = v1(yield* connect(server.socketUrl, { query: "user=ada" }))
      yield* client.send({ topic: "phoenix", event: "heartbeat", payload: {}, ref: "1" })
      expect(yield* client.next()).toEqual({ topic: "phoenix", event: "phx_reply", payload: { status: "ok", response: {} }, ref: "1" })
      yield* client.send({ topic: "room:1", event: "phx_join", payload: {}, ref: "2", join_ref: "2" })
      expect(yield* client.next()).toEqual({
        topic: "room:1",
        event: "phx_reply",
        payload: { status: "ok", response: { user: "ada", remembered: null } },
        ref: "2"
      })
      yield* client.send({ topic: "room:1", event: "poke", payload: { n: 1 }, ref: "3", join_ref: "2" })
      expect(yield* client.next()).toEqual({ topic: "room:1", event: "poked", payload: { n: 1 }, ref: null })
      yield* client.send({ topic: "room:1", event: "shout", payload: { text: "hi" }, ref: "4" })
      expect(yield* client.next()).toEqual({ topic: "room:1", event: "shout", payload: "hi", ref: null })
      yield* client.send({ topic: "room:1", event: "shout", payload: { text: 1 }, ref: "5" })
      expect(yield* client.next()).toMatchObject({
        topic: "room:1",
        event: "phx_reply",
        payload: { status: "error", response: { reason: "invalid payload", path: ["text"] } },
        ref: "5"
      })
      yield* client.send({ topic: "room:nowhere", event: "echo", payload: {}, ref: "6" })
      expect(yield* client.next()).toEqual({
        topic: "room:nowhere",
        event: "phx_reply",
        payload: { status: "error", response: { reason: "unmatched topic" } },
        ref: "6"
      })
      yield* client.send({ topic: "room:1", event: "phx_leave", payload: {}, ref: "7" })
      expect(yield* client.next()).toEqual({ topic: "room:1", event: "phx_reply", payload: { status: "ok", response: {} }, ref: "7" })
      // phx_close carries the join's ref, as Phoenix sends it.
      expect(yield* client.next()).toEqual({ topic: "room:1", event: "phx_close", payload: {}, ref: "2" })
      expect(log).toEqual(["join room:1 2", "leave room:1 2 left"])
    }))

  it.scopedLive("a stale join_ref is dropped; a binary push or reply to a V1 client is dropped and the connection goes on", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = v1(yield* connect(server.socketUrl, { query: "vsn=1.0.0" }))
      yield* client.send({ topic: "room:1", event: "phx_join", payload: {}, ref: "1", join_ref: "1" })
      yield* client.next((m) => m.ref === "1")
      const mark = client.mark()
      yield* client.send({ topic: "room:1", event: "echo", payload: {}, ref: "2", join_ref: "0" })
      yield* client.send({ topic: "room:1", event: "bytes:push", payload: {}, ref: "3", join_ref: "1" })
      yield* client.send({ topic: "room:1", event: "bytes:reply", payload: {}, ref: "4", join_ref: "1" })
      expect(yield* client.since(mark)).toEqual([])
      yield* client.send({ topic: "room:1", event: "echo", payload: { fine: true }, ref: "5", join_ref: "1" })
      expect(yield* client.next()).toEqual({ topic: "room:1", event: "phx_reply", payload: { status: "ok", response: { fine: true } }, ref: "5" })
    }))

  it.scopedLive("a V1 and a V2 client on one topic both get a broadcast, each in its own format", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const old = v1(yield* connect(server.socketUrl, { query: "vsn=1.0.0" }))
      const current = yield* connect(server.socketUrl)
      yield* old.send({ topic: "room:1", event: "phx_join", payload: {}, ref: "1" })
      yield* old.next((m) => m.ref === "1")
      yield* joined(current, "room:1", "1")
      yield* current.send(["1", "2", "room:1", "shout", { text: "both" }])
      expect(yield* current.next()).toEqual([null, null, "room:1", "shout", "both"])
      expect(yield* old.next()).toEqual({ topic: "room:1", event: "shout", payload: "both", ref: null })
      yield* server.broadcaster.broadcast("room:1", "news", { from: "server" })
      expect(yield* current.next()).toEqual([null, null, "room:1", "news", { from: "server" }])
      expect(yield* old.next()).toEqual({ topic: "room:1", event: "news", payload: { from: "server" }, ref: null })
    }))
})
