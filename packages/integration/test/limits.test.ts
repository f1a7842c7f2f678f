/**
 * The limits on what a client sends and what the server sends back, on real
 * sockets, for each way of serving: payload nesting (refused with 1007 before
 * any handler sees it), the outbound size of pushes, replies and broadcasts
 * (refused at the call with `MessageTooLarge`), and, for `NodeChannelServer`,
 * the handshake timeout.
 */
import { ChannelHandler, type ChannelHistory } from "@effect-channels/core"
import type { MessageTooLarge } from "@effect-channels/core/Message"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Scope from "effect/Scope"
import { connect as tcpConnect, type Socket } from "node:net"
import { hangingConnect } from "./utils/hangingConnect.js"
import { connect, eventually, type RawClient } from "./utils/rawClient.js"
import { startServer, transports } from "./utils/server.js"

const nested = (depth: number): unknown => {
  let value: unknown = 1
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

/** What the handler tells the client about a send it tried: ok, or the refusal's fields. */
const outcome = (effect: Effect.Effect<void, MessageTooLarge | ChannelHistory.UnrecoverablePayload>) =>
  Effect.map(Effect.either(effect), (result) =>
    Either.isRight(result)
      ? { sent: true }
      : result.left._tag === "MessageTooLarge"
      ? { sent: false, tag: result.left._tag, size: result.left.size, limit: result.left.limit, event: result.left.event }
      : { sent: false, tag: result.left._tag, event: result.left.event })

const makeHandler = () => {
  const seen: Array<string> = []
  const layer = ChannelHandler.layer({
    join: (conn) => Effect.succeed(conn.allowJoin()),
    incoming: (conn, event) =>
      Effect.gen(function*() {
        seen.push(event.event)
        const { bytes = 0 } = event.payload as { readonly bytes?: number }
        const data = "x".repeat(bytes)
        switch (event.event) {
          case "echo":
            return yield* conn.reply(event, "ok", event.payload)
          case "push":
            return yield* conn.reply(event, "ok", yield* outcome(conn.push("pushed", { data })))
          case "broadcast":
            return yield* conn.reply(event, "ok", yield* outcome(conn.broadcast("broadcast", { data })))
          case "broadcastFrom":
            return yield* conn.reply(event, "ok", yield* outcome(conn.broadcastFrom("broadcastFrom", { data })))
          case "reply": {
            const replied = yield* outcome(conn.reply(event, "ok", { data }))
            if (!replied.sent) yield* conn.push("reply refused", replied)
          }
        }
      })
  })
  return { seen, layer }
}

const joined = (client: RawClient, topic = "room:1") =>
  Effect.gen(function*() {
    yield* client.send(["1", "1", topic, "phx_join", {}])
    yield* client.next((m) => m[1] === "1")
  })

/** The V2 frame of a broadcast with `data`, in bytes: `[null,null,"room:1","<event>",{"data":"…"}]`. */
const broadcastBytes = (event: string, data: number) => Buffer.byteLength(JSON.stringify([null, null, "room:1", event, { data: "" }])) + data

describe.each(transports)("limits over %s", (transport) => {
  it.scopedLive("a payload nested deeper than maxNestingDepth closes with 1007 before the handler sees it; at the limit it is echoed", () =>
    Effect.gen(function*() {
      const { layer, seen } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* connect(server.socketUrl)
      const neighbour = yield* connect(server.socketUrl)
      yield* joined(client)
      yield* joined(neighbour)
      // At the default limit (64) the payload reaches the handler and its echo is encoded.
      yield* client.send(["1", "2", "room:1", "echo", nested(64)])
      expect(yield* client.next((m) => m[1] === "2")).toEqual(["1", "2", "room:1", "phx_reply", { status: "ok", response: nested(64) }])
      // 100,000 levels: refused, not decoded into a handler, nor echoed into a stack overflow.
      yield* client.send(`["1","3","room:1","echo",${"[".repeat(100_000)}1${"]".repeat(100_000)}]`)
      expect(yield* client.closed).toEqual({ code: 1007, reason: "payload nested deeper than 64" })
      expect(seen).toEqual(["echo"])
      expect(yield* neighbour.drain).toEqual([])
    }))

  it.scopedLive("maxNestingDepth is an option, for V1 too", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport, maxNestingDepth: 4 })
      const client = yield* connect(server.socketUrl, { query: "vsn=1.0.0" })
      yield* client.send(JSON.stringify({ topic: "phoenix", event: "heartbeat", ref: "1", payload: nested(4) }))
      yield* eventually(Effect.sync(() => client.received().length), (n) => n === 1)
      yield* client.send(JSON.stringify({ topic: "phoenix", event: "heartbeat", ref: "2", payload: nested(5) }))
      expect(yield* client.closed).toEqual({ code: 1007, reason: "payload nested deeper than 4" })
    }))

  it.scopedLive("push, reply, broadcast and broadcastFrom over maxOutboundSize fail with MessageTooLarge and send nothing", () =>
    Effect.gen(function*() {
      const limit = 4096
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport, maxOutboundSize: limit })
      const client = yield* connect(server.socketUrl)
      const member = yield* connect(server.socketUrl)
      yield* joined(client)
      yield* joined(member)
      let ref = 10
      const ask = (event: string, bytes: number) =>
        Effect.gen(function*() {
          const sent = String(++ref)
          yield* client.send(["1", sent, "room:1", event, { bytes }])
          return (yield* client.next((m) => m[1] === sent))[4]
        })
      for (const event of ["broadcast", "broadcastFrom"]) {
        // Exactly at the limit it goes out (measured on the V2 frame).
        const fits = limit - broadcastBytes(event, 0)
        expect(yield* ask(event, fits)).toEqual({ status: "ok", response: { sent: true } })
        expect((yield* member.next((m) => m[3] === event))[4]).toEqual({ data: "x".repeat(fits) })
        expect(yield* ask(event, fits + 1)).toEqual({
          status: "ok",
          response: { sent: false, tag: "MessageTooLarge", size: limit + 1, limit, event }
        })
      }
      expect(yield* ask("push", limit)).toEqual({
        status: "ok",
        response: { sent: false, tag: "MessageTooLarge", size: limit + Buffer.byteLength(`["1",null,"room:1","pushed",{"data":""}]`), limit, event: "pushed" }
      })
      yield* client.send(["1", "99", "room:1", "reply", { bytes: limit }])
      expect(yield* client.next((m) => m[3] === "reply refused")).toEqual(["1", null, "room:1", "reply refused", {
        sent: false,
        tag: "MessageTooLarge",
        size: limit + Buffer.byteLength(`["1","99","room:1","phx_reply",{"status":"ok","response":{"data":""}}]`),
        limit,
        event: "reply"
      }])
      // Nothing refused reached anyone: the member only has what fitted, the client no push.
      expect(yield* member.drain).toEqual([])
      expect((yield* client.drain).filter((m) => m[3] !== "broadcast")).toEqual([])
    }))

  it.scopedLive("ChannelBroadcaster.broadcast over 1 MiB (the default) fails with MessageTooLarge; subscribers get nothing", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const member = yield* connect(server.socketUrl)
      yield* joined(member)
      const limit = 1024 * 1024
      const fits = "x".repeat(limit - broadcastBytes("big", 0))
      yield* server.broadcaster.broadcast("room:1", "big", { data: fits })
      expect((yield* member.next((m) => m[3] === "big"))[4]).toEqual({ data: fits })
      const refused = yield* Effect.flip(server.broadcaster.broadcast("room:1", "big", { data: fits + "x" }))
      expect(refused).toMatchObject({ _tag: "MessageTooLarge", size: limit + 1, limit, topic: "room:1", event: "big" })
      expect(yield* member.drain).toEqual([])
    }))
})

/** Opens a TCP connection and sends half of an upgrade request: no blank line ends its headers. */
const stalled = (port: number) =>
  Effect.async<Socket>((resume) => {
    const socket = tcpConnect({ host: "127.0.0.1", port }, () => {
      socket.write(`GET /socket/websocket?vsn=2.0.0 HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n`)
      resume(Effect.succeed(socket))
    })
    socket.on("error", () => {})
  })

/** Opens a TCP connection and sends a whole upgrade request to the socket, with `query`. */
const upgradeRequest = (port: number, query: string) =>
  Effect.acquireRelease(
    Effect.async<Socket>((resume) => {
      const socket = tcpConnect({ host: "127.0.0.1", port }, () => {
        socket.write(
          `GET /socket/websocket?${query} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n` +
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        resume(Effect.succeed(socket))
      })
      socket.on("error", () => {})
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

const closedAt = (socket: Socket) =>
  Effect.async<{ readonly at: number; readonly answer: string }>((resume) => {
    let answer = ""
    socket.on("data", (chunk) => {
      answer += String(chunk)
    })
    if (socket.destroyed) return resume(Effect.succeed({ at: Date.now(), answer }))
    socket.once("close", () => resume(Effect.succeed({ at: Date.now(), answer })))
  })

describe("NodeChannelServer: handshakeTimeout", () => {
  it.scopedLive("200 connections with half an upgrade request are answered 408 and closed within the timeout; a normal client is unaffected", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const timeout = 1000
      const server = yield* startServer(layer, { handshakeTimeout: timeout })
      // A client that connected before, and stays idle past the timeout: the timeout is the handshake's only.
      const before = yield* connect(server.socketUrl)
      yield* joined(before)
      const start = Date.now()
      const sockets = yield* Effect.forEach(Array.from({ length: 200 }), () => stalled(server.port), { concurrency: 50 })
      const silent = yield* Effect.acquireRelease(
        Effect.async<Socket>((resume) => {
          const socket = tcpConnect({ host: "127.0.0.1", port: server.port }, () => resume(Effect.succeed(socket)))
        }),
        (socket) => Effect.sync(() => socket.destroy())
      )
      const closes = Effect.all([...sockets, silent].map(closedAt), { concurrency: "unbounded" })
      // Meanwhile a normal client connects, joins and is answered.
      const during = yield* connect(server.socketUrl)
      yield* joined(during)
      const ends = yield* closes
      const latest = Math.max(...ends.map((end) => end.at - start))
      expect(latest).toBeLessThan(timeout + 2000)
      expect(Math.min(...ends.map((end) => end.at - start))).toBeGreaterThanOrEqual(timeout - 50)
      for (const end of ends) expect(end.answer).toMatch(/^HTTP\/1\.1 408 /)
      // Both clients are still served.
      yield* before.send(["1", "2", "room:1", "echo", { still: "here" }])
      expect((yield* before.next((m) => m[1] === "2"))[4]).toEqual({ status: "ok", response: { still: "here" } })
      yield* during.send(["1", "2", "room:1", "echo", { also: true }])
      expect((yield* during.next((m) => m[1] === "2"))[4]).toEqual({ status: "ok", response: { also: true } })
      console.log(`handshakeTimeout ${timeout} ms: 201 stalled connections closed ${Math.min(...ends.map((end) => end.at - start))} to ${latest} ms after they opened`)
    }), 30_000)

  it.scopedLive("a connect hook that does not answer within the timeout is interrupted as its upgrade is answered 408", () =>
    Effect.gen(function*() {
      const { awaitInterrupted, layer, started } = yield* hangingConnect((params) => params["slow"] === "yes")
      const timeout = 500
      const server = yield* startServer(layer, { handshakeTimeout: timeout, logLevel: false })
      // A whole upgrade request, whose connect never answers.
      const socket = yield* upgradeRequest(server.port, "vsn=2.0.0&slow=yes")
      const closed = closedAt(socket)
      yield* Deferred.await(started)
      const start = Date.now()
      const end = yield* closed
      expect(end.answer).toMatch(/^HTTP\/1\.1 408 /)
      expect(end.at - start).toBeLessThan(timeout + 1000)
      // The hook's fiber ended with its handshake, instead of living on.
      yield* awaitInterrupted("the connect hook went on", 2000)
      expect(yield* server.broadcaster.connected).toBe(0)
      // The server goes on serving.
      const member = yield* connect(server.socketUrl)
      yield* joined(member)
    }), 15_000)

  it.scopedLive("on shutdown, connections that have not completed their request are closed at once: the server does not wait for them", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const scope = yield* Scope.make()
      // The default timeout, 10 s: far beyond what this test waits.
      const server = yield* Scope.extend(startServer(layer, { drain: false }), scope)
      const member = yield* connect(server.socketUrl)
      yield* joined(member)
      const silent = yield* Effect.async<Socket>((resume) => {
        const socket = tcpConnect({ host: "127.0.0.1", port: server.port }, () => resume(Effect.succeed(socket)))
        socket.on("error", () => {})
      })
      const half = yield* stalled(server.port)
      const ends = Effect.all([silent, half].map(closedAt), { concurrency: "unbounded" })
      const start = Date.now()
      yield* Scope.close(scope, Exit.void)
      const stopped = Date.now() - start
      const closed = yield* ends
      expect(stopped).toBeLessThan(3000)
      for (const end of closed) expect(end.at - start).toBeLessThan(3000)
      // The joined client was closed as a shutdown closes it.
      expect(yield* member.closed).toMatchObject({ code: 1001 })
    }), 15_000)
})
