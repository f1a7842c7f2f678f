/**
 * The wire protocol of PROTOCOL.md, frame by frame, on real sockets, for each
 * way of serving the socket.
 */
import { ChannelEvent, ChannelHandler } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { request } from "node:http"
import { connect as tcpConnect } from "node:net"
import { closedAs, connect, eventually, Refused } from "./utils/rawClient.js"
import { rawTransports, startServer } from "./utils/server.js"

const Shout = Schema.Struct({ text: Schema.String })

const makeHandler = () => {
  const log: Array<string> = []
  const connects: Array<string> = []
  const layer = ChannelHandler.layer({
    connect: (info) =>
      Effect.sync(() => connects.push(info.params["user"] ?? "?")).pipe(Effect.zipRight(
        info.params["token"] === "bad"
        ? Effect.fail(new ConnectRefused({ reason: "bad token" }))
        : Effect.succeed({
          id: info.params["id"],
          assigns: { user: info.params["user"] ?? null, token: info.authToken._tag === "Some" ? info.authToken.value : null }
        })
      )),
    join: (conn, event) =>
      Effect.gen(function*() {
        if (event.topic === "room:private") return conn.refuseJoin({ reason: "unauthorized" })
        if (event.topic === "room:die") return yield* Effect.die("boom")
        if (event.topic === "room:fail") return yield* Effect.fail("nope")
        if (event.topic === "room:schema") yield* ChannelEvent.decodePayload(event, Shout)
        yield* conn.push("welcome", { user: conn.socket.assigns["user"] })
        yield* conn.broadcast("entered", {})
        return conn.allowJoin({ topic: event.topic, token: conn.socket.assigns["token"] })
      }),
    incoming: (conn, event) =>
      Effect.gen(function*() {
        switch (event.event) {
          case "echo":
            return yield* conn.reply(event, "ok", event.payload)
          case "deny":
            return yield* conn.reply(event, "error", { reason: "denied" })
          case "shout":
            return yield* conn.broadcast("shout", (yield* ChannelEvent.decodePayload(event, Shout)).text)
          case "crash":
            return yield* Effect.die("handler crash")
          case "bye":
            return yield* conn.leave
          case "binary":
            return yield* conn.broadcast("binary", event.payload)
        }
      }),
    leave: (conn, reason) => Effect.sync(() => log.push(`leave ${conn.topic} ${reason}`)),
    disconnect: (socket) => Effect.sync(() => log.push(`disconnect ${socket.assigns["user"]}`))
  })
  return { connects, log, layer }
}

const join = (topic: string, ref: string, payload: unknown = {}) => [ref, ref, topic, "phx_join", payload] as const

describe.each(rawTransports)("protocol over %s", (transport) => {
  const setup = (options: Parameters<typeof startServer>[1] = {}) =>
    Effect.gen(function*() {
      const handler = makeHandler()
      const server = yield* startServer(handler.layer, { transport, ...options })
      return { ...handler, server }
    })

  it.scopedLive("heartbeat is answered ok with {} on topic phoenix, same ref", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([null, "7", "phoenix", "heartbeat", {}])
      expect(yield* client.next()).toEqual([null, "7", "phoenix", "phx_reply", { status: "ok", response: {} }])
    }))

  it.scopedLive("join: ok with the response, before anything pushed or broadcast during join", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
      yield* client.send([...join("room:1", "1")])
      expect(yield* client.next()).toEqual(["1", "1", "room:1", "phx_reply", {
        status: "ok",
        response: { topic: "room:1", token: null }
      }])
      expect(yield* client.next()).toEqual(["1", null, "room:1", "welcome", { user: "ada" }])
      expect(yield* client.next()).toEqual([null, null, "room:1", "entered", {}])
    }))

  it.scopedLive("join: refused, crashed, failed and invalid joins get their error replies", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:private", "1")])
      expect(yield* client.next()).toEqual(["1", "1", "room:private", "phx_reply", { status: "error", response: { reason: "unauthorized" } }])
      yield* client.send([...join("room:die", "2")])
      expect((yield* client.next())[4]).toEqual({ status: "error", response: { reason: "join crashed" } })
      yield* client.send([...join("room:fail", "3")])
      expect((yield* client.next())[4]).toEqual({ status: "error", response: { reason: "join crashed" } })
      yield* client.send([...join("room:schema", "4", { text: 1 })])
      expect((yield* client.next())[4]).toMatchObject({ status: "error", response: { reason: "invalid payload", path: ["text"] } })
      // None of them left a channel behind: a push to those topics is unmatched.
      yield* client.send(["1", "5", "room:private", "echo", {}])
      expect(yield* client.next()).toEqual([null, "5", "room:private", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
    }))

  it.scopedLive("push: ok and error replies carry the join_ref and ref", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "phx_reply")
      yield* client.send(["1", "2", "room:1", "echo", { n: 1 }])
      expect(yield* client.next((m) => m[1] === "2")).toEqual(["1", "2", "room:1", "phx_reply", { status: "ok", response: { n: 1 } }])
      yield* client.send(["1", "3", "room:1", "deny", {}])
      expect(yield* client.next((m) => m[1] === "3")).toEqual(["1", "3", "room:1", "phx_reply", { status: "error", response: { reason: "denied" } }])
    }))

  it.scopedLive("unmatched topic; phx_leave of a topic not joined is ok without phx_close", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send(["9", "1", "room:nowhere", "echo", {}])
      expect(yield* client.next()).toEqual([null, "1", "room:nowhere", "phx_reply", { status: "error", response: { reason: "unmatched topic" } }])
      yield* client.send(["9", "2", "room:nowhere", "phx_leave", {}])
      expect(yield* client.next()).toEqual(["9", "2", "room:nowhere", "phx_reply", { status: "ok", response: {} }])
      expect(yield* client.drain).toEqual([])
    }))

  it.scopedLive("phx_leave: ok reply, then phx_close with the join_ref; leave ran with 'left'", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered")
      yield* client.send(["1", "2", "room:1", "phx_leave", {}])
      expect(yield* client.next()).toEqual(["1", "2", "room:1", "phx_reply", { status: "ok", response: {} }])
      expect(yield* client.next()).toEqual(["1", "1", "room:1", "phx_close", {}])
      expect(log).toEqual(["leave room:1 left"])
    }))

  it.scopedLive("a message with a stale join_ref is dropped; a null join_ref is accepted", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered")
      yield* client.send(["0", "2", "room:1", "echo", {}])
      expect(yield* client.drain).toEqual([])
      yield* client.send([null, "3", "room:1", "echo", {}])
      expect(yield* client.next()).toEqual(["1", "3", "room:1", "phx_reply", { status: "ok", response: {} }])
    }))

  it.scopedLive("duplicate join: the old channel gets phx_close, the new join proceeds", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered")
      yield* client.send([...join("room:1", "2")])
      expect(yield* client.next()).toEqual(["1", "1", "room:1", "phx_close", {}])
      expect((yield* client.next())[0]).toBe("2")
      expect(log).toEqual(["leave room:1 duplicate"])
      yield* client.send(["2", "3", "room:1", "echo", {}])
      expect(yield* client.next((m) => m[1] === "3")).toEqual(["2", "3", "room:1", "phx_reply", { status: "ok", response: {} }])
    }))

  it.scopedLive("a crashing handler: phx_error for that channel only; its neighbours go on", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      const neighbour = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.send([...join("room:2", "2")])
      yield* neighbour.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered" && m[2] === "room:2")
      yield* neighbour.next((m) => m[3] === "entered")
      yield* client.send(["1", "3", "room:1", "crash", {}])
      expect(yield* client.next((m) => m[3] === "phx_error")).toEqual(["1", "1", "room:1", "phx_error", { reason: "channel_crash" }])
      yield* client.send(["2", "4", "room:2", "echo", { alive: true }])
      expect(yield* client.next((m) => m[1] === "4")).toEqual(["2", "4", "room:2", "phx_reply", { status: "ok", response: { alive: true } }])
      yield* neighbour.send(["1", "5", "room:1", "echo", {}])
      expect((yield* neighbour.next((m) => m[1] === "5"))[4]).toEqual({ status: "ok", response: {} })
      yield* eventually(Effect.sync(() => log), (lines) => lines.includes("leave room:1 crashed"))
      // The crashed topic can be joined again, as the client does.
      yield* client.send([...join("room:1", "6")])
      expect((yield* client.next((m) => m[1] === "6"))[4]).toMatchObject({ status: "ok" })
    }))

  it.scopedLive("a server-side leave sends phx_close; an invalid payload gets an error reply with its path", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered")
      yield* client.send(["1", "2", "room:1", "shout", { text: 42 }])
      expect(yield* client.next((m) => m[1] === "2")).toEqual(["1", "2", "room:1", "phx_reply", {
        status: "error",
        response: { reason: "invalid payload", path: ["text"], message: expect.any(String) }
      }])
      yield* client.send(["1", "3", "room:1", "bye", {}])
      expect(yield* client.next((m) => m[3] === "phx_close")).toEqual(["1", "1", "room:1", "phx_close", {}])
    }))

  it.scopedLive("too many channels joined", () =>
    Effect.gen(function*() {
      const { server } = yield* setup({ maxChannels: 2 })
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.send([...join("room:2", "2")])
      yield* client.send([...join("room:3", "3")])
      expect(yield* client.next((m) => m[1] === "3")).toEqual(["3", "3", "room:3", "phx_reply", {
        status: "error",
        response: { reason: "too many channels joined" }
      }])
    }))

  it.scopedLive("binary pushes and broadcasts travel as V2 binary frames", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl)
      yield* client.send([...join("room:1", "1")])
      yield* client.next((m) => m[3] === "entered")
      const encoder = new TextEncoder()
      const field = (text: string) => [text.length, ...encoder.encode(text)]
      const [jr, ref, topic, event] = [field("1"), field("2"), field("room:1"), field("binary")]
      yield* client.send(new Uint8Array([0, jr[0]!, ref[0]!, topic[0]!, event[0]!, ...jr.slice(1), ...ref.slice(1), ...topic.slice(1), ...event.slice(1), 1, 2, 3]))
      const frame = yield* client.nextBinary()
      expect(Array.from(frame)).toEqual([2, 6, 6, ...encoder.encode("room:1"), ...encoder.encode("binary"), 1, 2, 3])
    }))

  // Reads the WebSocket's frames; V1 over long-poll is in protocol-edges.test.ts.
  it.scopedLive.skipIf(transport === "longpoll")("V1 clients (vsn=1.0.0) get V1 objects without join_ref", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const client = yield* connect(server.socketUrl, { query: "vsn=1.0.0" })
      const frames: Array<unknown> = []
      client.ws.on("message", (data) => frames.push(JSON.parse(String(data))))
      yield* client.send(JSON.stringify({ topic: "room:1", event: "phx_join", payload: {}, ref: "1" }))
      yield* client.send(JSON.stringify({ topic: "room:1", event: "echo", payload: { v: 1 }, ref: "2", join_ref: "1" }))
      yield* eventually(Effect.sync(() => frames.length), (n) => n >= 4)
      expect(frames[0]).toEqual({ topic: "room:1", event: "phx_reply", payload: { status: "ok", response: { topic: "room:1", token: null } }, ref: "1" })
      expect(frames).toContainEqual({ topic: "room:1", event: "phx_reply", payload: { status: "ok", response: { v: 1 } }, ref: "2" })
      expect(frames).toContainEqual({ topic: "room:1", event: "entered", payload: {}, ref: null })
    }))

  it.scopedLive("a malformed frame closes the connection with 1007; disconnect runs once", () =>
    Effect.gen(function*() {
      const { log, server } = yield* setup()
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
      yield* client.send("{not json")
      expect(yield* client.closed).toMatchObject(closedAs(client, 1007))
      yield* eventually(Effect.sync(() => log), (lines) => lines.length === 1)
      expect(log).toEqual(["disconnect ada"])
    }))

  it.scopedLive("admission: unknown vsn, refused connect, foreign origin are 403; same origin, no origin pass", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const host = `127.0.0.1:${server.port}`
      const status = (options: Parameters<typeof connect>[1]) =>
        connect(server.socketUrl, options).pipe(
          Effect.as(101),
          Effect.catchAll((error) => Effect.succeed(error instanceof Refused ? error.status : -1))
        )
      expect(yield* status({ query: "vsn=3.0.0" })).toBe(403)
      expect(yield* status({ query: "vsn=2.0.0&token=bad" })).toBe(403)
      expect(yield* status({ headers: { Origin: "http://evil.example" } })).toBe(403)
      expect(yield* status({ headers: { Origin: `http://${host}` } })).toBe(101)
      expect(yield* status({})).toBe(101)
      expect(yield* status({ query: "" })).toBe(101)
    }))

  it.scopedLive("checkOrigin: false, a list of origins and patterns", () =>
    Effect.gen(function*() {
      const open = yield* setup({ checkOrigin: false })
      yield* connect(open.server.socketUrl, { headers: { Origin: "http://evil.example" } })
      const listed = yield* setup({ checkOrigin: ["https://example.com", "//*.example.org"] })
      const status = (origin: string) =>
        connect(listed.server.socketUrl, { headers: { Origin: origin } }).pipe(
          Effect.as(101),
          Effect.catchAll((error) => Effect.succeed(error.status))
        )
      expect(yield* status("https://example.com")).toBe(101)
      expect(yield* status("http://example.com")).toBe(403)
      expect(yield* status("http://chat.example.org")).toBe(101)
      expect(yield* status("http://example.net")).toBe(403)
    }))

  it.scopedLive("a non-GET upgrade is 400", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const status = yield* Effect.async<number>((resume) => {
        const req = request({
          host: "127.0.0.1",
          port: server.port,
          path: "/socket/websocket?vsn=2.0.0",
          method: "POST",
          headers: { Connection: "Upgrade", Upgrade: "websocket", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==" }
        })
        req.on("response", (res) => resume(Effect.succeed(res.statusCode ?? 0)))
        req.on("upgrade", () => resume(Effect.succeed(101)))
        req.on("error", () => resume(Effect.succeed(-1)))
        req.end()
      })
      expect(status).toBe(400)
    }))

  it.scopedLive.skipIf(transport === "longpoll")("a plain GET without an upgrade is refused and connect never runs", () =>
    Effect.gen(function*() {
      const { connects, server } = yield* setup()
      const response = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${server.port}/socket/websocket?vsn=2.0.0&user=ada`, { headers: { connection: "close" } })
      )
      // The route answers 400; NodeChannelServer only takes upgrades, the app has no such route.
      expect(response.status).toBe(transport === "server" ? 404 : 400)
      expect(connects).toEqual([])
    }))

  it.scopedLive("auth token: subprotocol phoenix is selected and connect sees the decoded token", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const token = "sécret-token"
      const encoded = Buffer.from(token).toString("base64").replace(/=/g, "")
      const client = yield* connect(server.socketUrl, { protocols: ["phoenix", `base64url.bearer.phx.${encoded}`] })
      if (client.kind === "websocket") expect(client.ws.protocol).toBe("phoenix")
      yield* client.send([...join("room:1", "1")])
      expect((yield* client.next())[4]).toEqual({ status: "ok", response: { topic: "room:1", token } })
    }))

  it.scopedLive("a frame over maxFrameSize closes the connection with 1009", () =>
    Effect.gen(function*() {
      const { server } = yield* setup({ maxFrameSize: 1024 })
      const client = yield* connect(server.socketUrl)
      yield* client.send(JSON.stringify([null, "1", "phoenix", "heartbeat", { pad: "x".repeat(2048) }]))
      expect(yield* client.closed).toMatchObject(closedAs(client, 1009))
    }))

  it.scopedLive("socket id: disconnect(id) closes every connection with that id (1001), and only those", () =>
    Effect.gen(function*() {
      const { server } = yield* setup()
      const one = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:1" })
      const two = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:1" })
      const other = yield* connect(server.socketUrl, { query: "vsn=2.0.0&id=user:2" })
      yield* eventually(server.broadcaster.connected, (n) => n === 3)
      yield* server.broadcaster.disconnect("user:1")
      expect(yield* one.closed).toMatchObject(closedAs(one, 1001))
      expect(yield* two.closed).toMatchObject(closedAs(two, 1001))
      yield* other.drain
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
    }))
})

describe.each(["server", "route"] as const)("frame size limit over %s, before buffering", (transport) => {
  it.scopedLive("a frame header declaring 64 MiB is refused at once with 1009", () =>
    Effect.gen(function*() {
      const server = yield* startServer(makeHandler().layer, { transport })
      const code = yield* Effect.async<number>((resume) => {
        const socket = tcpConnect(server.port, "127.0.0.1", () => {
          socket.write(
            "GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
              "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
          )
        })
        let buffer = Buffer.alloc(0)
        let upgraded = false
        socket.on("data", (data) => {
          buffer = Buffer.concat([buffer, data])
          if (!upgraded) {
            const end = buffer.indexOf("\r\n\r\n")
            if (end === -1) return
            upgraded = true
            buffer = buffer.subarray(end + 4)
            // A masked text frame whose 64-bit length says 64 MiB, and 4 bytes of it.
            const header = Buffer.from([0x81, 0xff, 0, 0, 0, 0, 0x04, 0, 0, 0, 1, 2, 3, 4])
            socket.write(Buffer.concat([header, Buffer.from("abcd")]))
          }
          // The server's close frame: opcode 0x88, then the code.
          if (buffer.length >= 4 && buffer[0] === 0x88) {
            resume(Effect.succeed(buffer.readUInt16BE(2)))
            socket.destroy()
          }
        })
        socket.on("error", () => resume(Effect.succeed(-1)))
      })
      expect(code).toBe(1009)
    }))
})
