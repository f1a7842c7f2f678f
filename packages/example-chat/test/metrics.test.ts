/**
 * `GET /metrics` answers Prometheus' text format, made by OpenTelemetry's
 * Prometheus exporter from Effect's metrics, with effect-channels' metrics
 * moved by a real phoenix client; with metrics off there is no `/metrics`.
 */
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Socket } from "phoenix"
import WebSocket from "ws"
import * as ChatServer from "../src/ChatServer.js"

const start = (options: Partial<ChatServer.Options> = {}) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(ChatServer.layer({ host: "127.0.0.1", port: 0, ...options }))
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return address.port
  })

/** A phoenix client joined to the lobby as `user`, disconnected with the scope. */
const member = (port: number, user: string) =>
  Effect.acquireRelease(
    Effect.async<Socket>((resume) => {
      const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, reconnectAfterMs: () => 60_000 })
      socket.connect()
      const lobby = socket.channel("rooms:lobby", { user })
      lobby.join().receive("ok", () => resume(Effect.succeed(socket)))
    }).pipe(Effect.timeout("5 seconds"), Effect.orDie),
    (socket) => Effect.sync(() => socket.disconnect())
  )

const scrape = (port: number) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`)
    return { status: response.status, type: response.headers.get("content-type"), text: await response.text() }
  })

/** The value of the sample `name{labels…}` (labels as the exporter writes them, in order), if any. */
const sample = (text: string, name: string, labels: string) => {
  const line = text.split("\n").find((line) => line.startsWith(`${name}{${labels}`))
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1))
}

describe("GET /metrics", () => {
  it.scopedLive("answers Prometheus text with the socket's metrics", () =>
    Effect.gen(function*() {
      const port = yield* start()
      yield* member(port, "ada")
      yield* member(port, "bob")
      const { status, text, type } = yield* scrape(port)
      expect(status).toBe(200)
      expect(type).toContain("text/plain; version=0.0.4")
      expect(text).toContain("# TYPE effect_channels_connections gauge")
      expect(text).toContain("# TYPE effect_channels_joins_total counter")
      expect(text).toContain("# TYPE effect_channels_broadcast_fanout_seconds histogram")
      expect(sample(text, "effect_channels_connections", `transport="websocket"`)).toBe(2)
      expect(sample(text, "effect_channels_channels_joined", `pattern="*"`)).toBe(2)
      expect(sample(text, "effect_channels_joins_total", `result="allowed",pattern="*"`)).toBe(2)
      expect(sample(text, "effect_channels_presence_entries", "")).toBe(2)
      expect(sample(text, "effect_channels_events_in_total", "")).toBeGreaterThanOrEqual(2)
      expect(sample(text, "effect_channels_bytes_out_total", "")).toBeGreaterThan(0)
    }))

  it.scopedLive("is not served with metrics off", () =>
    Effect.gen(function*() {
      const port = yield* start({ metrics: false })
      expect((yield* scrape(port)).status).toBe(404)
    }))
})
