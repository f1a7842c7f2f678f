/**
 * The metrics move as connections, joins, events, broadcasts, closes and
 * presence happen on real sockets, read with `Metric.value`; spans reach an
 * installed tracer with their names and attributes. The registry is
 * process-wide: each test reads the metrics before and after what it does.
 */
import { ChannelMetrics, ChannelRouter, Presence } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import type * as MetricState from "effect/MetricState"
import * as Tracer from "effect/Tracer"
import type { Socket } from "node:net"
import type { RawClient } from "./utils/rawClient.js"
import { connect, eventually } from "./utils/rawClient.js"
import { startServer } from "./utils/server.js"

const counter = (metric: Metric.Metric.Counter<number>, ...labels: ReadonlyArray<readonly [string, string]>) =>
  Effect.map(
    Metric.value(labels.reduce((m, [key, value]) => Metric.tagged(m, key, value), metric)),
    (state: MetricState.MetricState.Counter<number>) => state.count
  )

const gauge = (metric: Metric.Metric.Gauge<number>, ...labels: ReadonlyArray<readonly [string, string]>) =>
  Effect.map(
    Metric.value(labels.reduce((m, [key, value]) => Metric.tagged(m, key, value), metric)),
    (state: MetricState.MetricState.Gauge<number>) => state.value
  )

const connections = gauge(ChannelMetrics.connections, ["transport", "websocket"])
const closes = (code: string) => counter(ChannelMetrics.closes, ["code", code])
const joins = (result: string, pattern: string) => counter(ChannelMetrics.joins, ["result", result], ["pattern", pattern])
const joined = (pattern: string) => gauge(ChannelMetrics.channelsJoined, ["pattern", pattern])
const eventsIn = counter(ChannelMetrics.eventsIn)
const eventsOut = counter(ChannelMetrics.eventsOut)
const bytesOut = counter(ChannelMetrics.bytesOut)
const fanouts = Effect.map(Metric.value(ChannelMetrics.broadcastFanout), (state) => state.count)
const slowDropped = counter(ChannelMetrics.slowClientsDropped)
const presenceEntries = gauge(ChannelMetrics.presenceEntries)

/** Rooms: `room:ok` joins, `room:no` is refused, `room:crash` dies; `ping` is answered. */
const Rooms = ChannelRouter.layer({
  "room:*": {
    join: (conn, event) =>
      event.topic === "room:crash"
        ? Effect.die(new Error("join died"))
        : Effect.succeed(event.topic === "room:no" ? conn.refuseJoin({ reason: "no" }) : conn.allowJoin()),
    incoming: (conn, event) =>
      event.event === "ping"
        ? conn.reply(event, "ok", event.payload)
        : event.event === "die"
        ? Effect.die(new Error("event died"))
        : conn.broadcast(event.event, event.payload)
  },
  "lobby": {
    join: (conn) =>
      Effect.gen(function*() {
        const presence = yield* Presence.Presence
        yield* presence.track(conn, conn.topic, "user", {})
        return conn.allowJoin()
      })
  }
}).pipe(Layer.provide(Presence.layer({ batchWindow: "10 millis" })))

const join = (client: RawClient, topic: string, ref: string) =>
  Effect.zipRight(client.send([ref, ref, topic, "phx_join", {}]), client.next((m) => m[1] === ref))

const delta = <A extends number>(read: Effect.Effect<A>) =>
  Effect.map(read, (before) => Effect.map(read, (after) => after - before))

const tcpSocket = (client: RawClient) => (client.ws as unknown as { readonly _socket: Socket })._socket

describe("metrics", () => {
  it.scopedLive("open connections go up and down; a client's close is counted as remote", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms)
      const before = yield* connections
      const remote = yield* delta(closes("remote"))
      const a = yield* connect(server.socketUrl)
      yield* connect(server.socketUrl)
      yield* eventually(connections, (n) => n === before + 2)
      a.ws.close(1000)
      yield* eventually(connections, (n) => n === before + 1)
      expect(yield* remote).toBe(1)
    }))

  it.scopedLive("joins are counted allowed, refused and crashed by pattern; joined channels by pattern", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms)
      const client = yield* connect(server.socketUrl)
      const allowed = yield* delta(joins("allowed", "room:*"))
      const refused = yield* delta(joins("refused", "room:*"))
      const crashed = yield* delta(joins("crashed", "room:*"))
      const unmatched = yield* delta(joins("refused", "(unmatched)"))
      const channels = yield* delta(joined("room:*"))
      expect((yield* join(client, "room:ok", "1"))[4]).toMatchObject({ status: "ok" })
      expect((yield* join(client, "room:no", "2"))[4]).toMatchObject({ status: "error" })
      expect((yield* join(client, "room:crash", "3"))[4]).toMatchObject({ status: "error" })
      expect((yield* join(client, "elsewhere", "4"))[4]).toMatchObject({ status: "error" })
      expect([yield* allowed, yield* refused, yield* crashed, yield* unmatched]).toEqual([1, 1, 1, 1])
      expect(yield* channels).toBe(1)
      yield* client.send(["1", "5", "room:ok", "phx_leave", {}])
      yield* client.next((m) => m[1] === "5")
      yield* eventually(channels, (n) => n === 0)
    }))

  it.scopedLive("joined channels go back down on every end: a duplicate join, a crash, a leave, a disconnect", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms)
      const channels = yield* delta(joined("room:*"))
      const client = yield* connect(server.socketUrl)
      yield* join(client, "room:a", "1")
      yield* join(client, "room:a", "2")
      yield* join(client, "room:b", "3")
      yield* join(client, "room:c", "4")
      yield* join(client, "room:d", "5")
      expect(yield* channels).toBe(4)
      yield* client.send(["3", "6", "room:b", "die", {}])
      yield* client.next((m) => m[2] === "room:b" && m[3] === "phx_error")
      yield* client.send(["4", "7", "room:c", "phx_leave", {}])
      yield* client.next((m) => m[1] === "7")
      yield* eventually(channels, (n) => n === 2)
      client.ws.terminate()
      yield* eventually(channels, (n) => n === 0)
    }))

  it.scopedLive("events in and out, and bytes out, count every message and byte; a broadcast counts each copy", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms)
      const a = yield* connect(server.socketUrl)
      const b = yield* connect(server.socketUrl)
      yield* join(a, "room:ok", "1")
      yield* join(b, "room:ok", "1")
      const received: Array<number> = []
      a.ws.on("message", (data: Buffer) => received.push(data.byteLength))
      b.ws.on("message", (data: Buffer) => received.push(data.byteLength))
      const inCount = yield* delta(eventsIn)
      const outCount = yield* delta(eventsOut)
      const outBytes = yield* delta(bytesOut)
      const batches = yield* delta(fanouts)
      yield* a.send(["1", "2", "room:ok", "ping", { text: "héllo" }])
      yield* a.next((m) => m[1] === "2")
      yield* a.send(["1", "3", "room:ok", "shout", { text: "to all" }])
      yield* a.next((m) => m[3] === "shout")
      yield* b.next((m) => m[3] === "shout")
      // The broadcast's counts reach the metrics once its batch is delivered.
      yield* eventually(outCount, (n) => n === 3)
      expect(yield* inCount).toBe(2)
      expect(received.length).toBe(3)
      // Bytes as written: the reply's "é" is two bytes.
      expect(yield* outBytes).toBe(received.reduce((sum, n) => sum + n, 0))
      expect(yield* batches).toBeGreaterThanOrEqual(1)
    }))

  it.scopedLive("closes are counted by the code sent: heartbeat timeout 1000, malformed frame 1007", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms, { heartbeatTimeout: "300 millis" })
      const normal = yield* delta(closes("1000"))
      const invalid = yield* delta(closes("1007"))
      const silent = yield* connect(server.socketUrl)
      const malformed = yield* connect(server.socketUrl)
      yield* malformed.send("not json")
      expect((yield* malformed.closed).code).toBe(1007)
      expect((yield* silent.closed).code).toBe(1000)
      expect([yield* normal, yield* invalid]).toEqual([1, 1])
    }))

  it.scopedLive("a client that stops reading is counted as dropped, and its close as 1006", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms, { outboundBufferLimit: 64 * 1024 })
      const dropped = yield* delta(slowDropped)
      const aborted = yield* delta(closes("1006"))
      const slow = yield* connect(server.socketUrl)
      yield* join(slow, "room:ok", "1")
      tcpSocket(slow).pause()
      const data = "x".repeat(512 * 1024)
      let sent = 0
      while ((yield* dropped) === 0) {
        if (sent === 400) return yield* Effect.dieMessage(`not dropped after ${sent} broadcasts`)
        yield* server.broadcaster.broadcast("room:ok", "big", { n: ++sent, data })
        yield* Effect.sleep("5 millis")
      }
      expect(yield* dropped).toBe(1)
      expect(yield* aborted).toBe(1)
      tcpSocket(slow).resume()
      expect((yield* slow.closed).code).toBe(1006)
    }), 30_000)

  it.scopedLive("presence entries go up on track and down when the channel ends", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms)
      const entries = yield* delta(presenceEntries)
      const client = yield* connect(server.socketUrl)
      yield* join(client, "lobby", "1")
      expect(yield* entries).toBe(1)
      client.ws.terminate()
      yield* eventually(entries, (n) => n === 0)
    }))

  it.scopedLive("with ChannelMetrics.layerDisabled nothing is recorded", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Rooms).pipe(Effect.provide(ChannelMetrics.layerDisabled))
      const opened = yield* delta(connections)
      const inCount = yield* delta(eventsIn)
      const outCount = yield* delta(eventsOut)
      const allowed = yield* delta(joins("allowed", "room:*"))
      const entries = yield* delta(presenceEntries)
      const batches = yield* delta(fanouts)
      const client = yield* connect(server.socketUrl)
      yield* join(client, "room:ok", "1")
      yield* join(client, "lobby", "2")
      yield* client.send(["1", "3", "room:ok", "shout", {}])
      yield* client.next((m) => m[3] === "shout")
      expect([yield* opened, yield* inCount, yield* outCount, yield* allowed, yield* entries, yield* batches])
        .toEqual([0, 0, 0, 0, 0, 0])
    }))
})

/** A tracer that keeps every span Effect's own tracer makes. */
const recordingTracer = () => {
  const native = Effect.runSync(Effect.tracer)
  const spans: Array<Tracer.Span> = []
  const tracer = Tracer.make({
    span: (name, parent, context, links, startTime, kind, options) => {
      const span = native.span(name, parent, context, links, startTime, kind, options)
      spans.push(span)
      return span
    },
    context: (f) => f()
  })
  return { tracer, spans }
}

describe("spans", () => {
  it.scopedLive("connect, join, each event and each broadcast are spans of the installed tracer", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = yield* startServer(Rooms).pipe(Effect.withTracer(tracer))
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&token=secret" })
      yield* join(client, "room:ok", "1")
      yield* join(client, "room:no", "2")
      yield* client.send(["1", "3", "room:ok", "ping", {}])
      yield* client.next((m) => m[1] === "3")
      yield* client.send(["1", "4", "room:ok", "shout", {}])
      yield* client.next((m) => m[3] === "shout")
      const ended = (name: string) =>
        spans.filter((span) => span.name === name && span.status._tag === "Ended")
      const attributes = (name: string) => ended(name).map((span) => Object.fromEntries(span.attributes))
      yield* eventually(Effect.sync(() => ended("channels.event").length), (n) => n === 2)

      expect(attributes("channels.connect")).toEqual([
        // The query string (connect params, tokens) is not recorded.
        { "channels.transport": "websocket", "channels.url": "/socket/websocket" }
      ])
      expect(ended("channels.connect")[0]!.kind).toBe("server")
      expect(attributes("channels.join")).toEqual([
        { "channels.topic": "room:ok", "channels.join.result": "allowed", "channels.pattern": "room:*" },
        { "channels.topic": "room:no", "channels.join.result": "refused", "channels.pattern": "room:*" }
      ])
      expect(attributes("channels.event")).toEqual([
        { "channels.topic": "room:ok", "channels.event": "ping" },
        { "channels.topic": "room:ok", "channels.event": "shout" }
      ])
      // The broadcast is made by the `shout` event, within its span.
      const [broadcast] = ended("channels.broadcast")
      expect(Object.fromEntries(broadcast!.attributes)).toEqual({ "channels.topic": "room:ok", "channels.event": "shout" })
      const shout = ended("channels.event")[1]!
      expect(broadcast!.parent._tag === "Some" && broadcast!.parent.value.spanId).toBe(shout.spanId)
    }))

  it.scopedLive("without a tracer installed, no span is made", () =>
    Effect.gen(function*() {
      const { spans, tracer } = recordingTracer()
      const server = yield* startServer(Rooms)
      // Installed after the server is made: the server decided not to trace.
      const client = yield* connect(server.socketUrl)
      yield* join(client, "room:ok", "1").pipe(Effect.withTracer(tracer))
      yield* client.send(["1", "2", "room:ok", "ping", {}])
      yield* client.next((m) => m[1] === "2")
      expect(spans.filter((span) => span.name.startsWith("channels."))).toEqual([])
    }))
})
