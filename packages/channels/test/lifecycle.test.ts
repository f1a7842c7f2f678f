/**
 * However a connection ends, `disconnect` runs once, each channel's `leave`
 * runs once, and nothing is left behind: no subscription, no registration.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as TestClock from "effect/TestClock"
import { createConnection, type Socket } from "node:net"
import { connect, eventually } from "./utils/rawClient.js"
import type { TestServer } from "./utils/server.js"
import { startServer, transports } from "./utils/server.js"

const makeHandler = () => {
  const log: Array<string> = []
  const layer = ChannelHandler.layer({
    connect: (info) => Effect.succeed({ id: info.params["id"], assigns: { user: info.params["user"] ?? "?" } }),
    join: (conn) => Effect.succeed(conn.allowJoin()),
    incoming: (conn, event) =>
      event.event === "big" ? conn.broadcast("big", { data: "x".repeat(256 * 1024) }) : conn.reply(event, "ok", event.payload),
    leave: (conn, reason) => Effect.sync(() => log.push(`leave ${conn.topic} ${reason}`)),
    disconnect: (socket) => Effect.sync(() => log.push(`disconnect ${socket.assigns["user"]}`))
  })
  return { log, layer }
}

const joined = (server: TestServer, user: string, query = "") =>
  Effect.gen(function*() {
    const client = yield* connect(server.socketUrl, { query: `vsn=2.0.0&user=${user}${query}` })
    yield* client.send(["1", "1", "room:1", "phx_join", {}])
    yield* client.send(["2", "2", "room:2", "phx_join", {}])
    yield* client.next((m) => m[1] === "2")
    return client
  })

/** A client on a bare TCP socket that joins room:1, then never reads again. */
const stalledClient = (port: number, user: string) =>
  Effect.acquireRelease(
    Effect.async<Socket>((resume) => {
      const socket = createConnection(port, "127.0.0.1", () => {
        socket.write(
          `GET /socket/websocket?vsn=2.0.0&user=${user} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n` +
            "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
      })
      socket.once("data", () => {
        const payload = Buffer.from(JSON.stringify(["1", "1", "room:1", "phx_join", {}]))
        const mask = Buffer.from([1, 2, 3, 4])
        const masked = payload.map((byte, i) => byte ^ mask[i % 4]!)
        socket.write(Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]))
        socket.pause()
        resume(Effect.succeed(socket))
      })
    }),
    (socket) => Effect.sync(() => socket.destroy())
  )

const settled = (server: TestServer, log: Array<string>, expected: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    yield* eventually(Effect.sync(() => log.length), (n) => n >= expected.length)
    expect([...log].sort()).toEqual([...expected].sort())
    // disconnect runs after every leave
    expect(log[log.length - 1]).toMatch(/^disconnect/)
    yield* eventually(server.broker.subscribers("room:1"), (n) => n === 0)
    yield* eventually(server.broker.subscribers("room:2"), (n) => n === 0)
    yield* eventually(server.broadcaster.connected, (n) => n === 0)
  })

const closedOnce = ["leave room:1 disconnected", "leave room:2 disconnected", "disconnect ada"]

describe.each(transports)("lifecycle over %s", (transport) => {
  it.scopedLive("client close 1000: leave and disconnect once, nothing left", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      expect(yield* server.broker.subscribers("room:1")).toBe(1)
      client.ws.close(1000)
      yield* settled(server, log, closedOnce)
    }))

  it.scopedLive("client close 1001 (a browser tab going away)", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      client.ws.close(1001)
      yield* settled(server, log, closedOnce)
    }))

  it.scopedLive("TCP reset with no close frame", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada")
      const raw = (client.ws as unknown as { _socket: import("node:net").Socket })._socket
      raw.resetAndDestroy()
      yield* settled(server, log, closedOnce)
    }))

  it.scopedLive("server-side disconnect by socket id", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport })
      const client = yield* joined(server, "ada", "&id=user:ada")
      yield* server.broadcaster.disconnect("user:ada")
      expect((yield* client.closed).code).toBe(1001)
      yield* settled(server, log, closedOnce)
    }))

  it.scopedLive("heartbeat timeout (real clock, 300 ms)", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, heartbeatTimeout: "300 millis" })
      const client = yield* joined(server, "ada")
      const closed = yield* client.closed
      expect(closed).toEqual({ code: 1000, reason: "heartbeat timeout" })
      yield* settled(server, log, closedOnce)
    }))

  it.scopedLive("a client that stops reading is disconnected; a reading neighbour gets every broadcast", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer, { transport, outboundBufferLimit: 4 * 1024 * 1024 })
      yield* stalledClient(server.port, "slow")
      yield* eventually(server.broker.subscribers("room:1"), (n) => n === 1)
      const fast = yield* joined(server, "fast")
      let received = 0
      fast.ws.on("message", (data) => {
        if (String(data).includes('"big"')) received++
      })
      // 75 MiB, one broadcast at a time, as fast as the reading client takes
      // them: more than loopback's kernel buffers (up to 32 MiB received,
      // 4 MiB sent) absorb for the client that does not read.
      for (let i = 1; i <= 300; i++) {
        yield* fast.send(["1", `b${i}`, "room:1", "big", {}])
        yield* eventually(Effect.sync(() => received), (n) => n === i)
      }
      yield* eventually(Effect.sync(() => log), (lines) => lines.includes("disconnect slow"))
      expect(log).not.toContain("disconnect fast")
      expect(yield* server.broker.subscribers("room:1")).toBe(1)
    }))

  it.scopedLive("a flood over inboundQueueLimit is closed with 1008; the neighbour is unaffected", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport, inboundQueueLimit: 10 })
      const flooder = yield* joined(server, "flood")
      const neighbour = yield* joined(server, "calm")
      const frame = JSON.stringify(["1", "x", "room:1", "echo", {}])
      for (let i = 0; i < 5000; i++) flooder.ws.send(frame)
      expect((yield* flooder.closed).code).toBe(1008)
      yield* neighbour.send(["1", "ok", "room:1", "echo", { fine: true }])
      expect((yield* neighbour.next((m) => m[1] === "ok"))[4]).toEqual({ status: "ok", response: { fine: true } })
    }))
})

describe("heartbeat under TestClock, on a real socket", () => {
  it.scoped("closes after 60 s of test time without a message, not before; a heartbeat resets it", () =>
    Effect.gen(function*() {
      const { layer, log } = makeHandler()
      const server = yield* startServer(layer)
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada" })
      let closedAt: number | undefined
      client.ws.on("close", () => {
        closedAt = Date.now()
      })
      yield* eventually(server.broadcaster.connected, (n) => n === 1)
      yield* TestClock.adjust("50 seconds")
      yield* client.send([null, "1", "phoenix", "heartbeat", {}])
      yield* client.next((m) => m[1] === "1")
      yield* TestClock.adjust("50 seconds")
      expect(closedAt).toBeUndefined()
      expect(client.ws.readyState).toBe(client.ws.OPEN)
      const waiting = yield* Effect.fork(client.closed)
      yield* TestClock.adjust("11 seconds")
      expect((yield* Fiber.join(waiting)).reason).toBe("heartbeat timeout")
      yield* eventually(Effect.sync(() => log), (lines) => lines.includes("disconnect ada"))
    }))
})
