/**
 * The socket's metrics and spans, in one place, so that the runtime records
 * them with one call where each thing happens.
 *
 * Metrics are Effect `Metric`s in the global registry, updated
 * synchronously (`unsafeUpdate`), not as effects: a connection records
 * without a fiber step. Labelled metrics are made once per label value
 * (the labels here are bounded: transport, topic pattern, join result,
 * close code) and kept, so that an update is a map look-up and an addition,
 * not a key hashed per update. The fan-out of a broadcast is counted into
 * plain numbers by each subscriber and added to the metrics once per batch
 * by the broker.
 *
 * Spans go through Effect's tracer, but only when an application installed
 * one: with Effect's built-in tracer (nobody reads its spans) a span would
 * cost its allocations for nothing, so whether to trace is decided once,
 * where a socket, a broker or a presence is made.
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import type * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricLabel from "effect/MetricLabel"
import type * as MetricState from "effect/MetricState"
import type * as Tracer from "effect/Tracer"
import type { Envelope } from "../Broker.js"
import type { Frame } from "../protocol/Message.js"
import type { Serializer } from "../protocol/Serializer.js"
import { byteLength } from "./frameSize.js"

/** The names of the metrics, as exported (a Prometheus exporter adds `_total` to counters). */
export const names = {
  connections: "effect_channels_connections",
  channelsJoined: "effect_channels_channels_joined",
  joins: "effect_channels_joins",
  eventsIn: "effect_channels_events_in",
  eventsOut: "effect_channels_events_out",
  bytesOut: "effect_channels_bytes_out",
  broadcastFanout: "effect_channels_broadcast_fanout_seconds",
  slowClientsDropped: "effect_channels_slow_clients_dropped",
  closes: "effect_channels_closes",
  presenceEntries: "effect_channels_presence_entries"
} as const

const counterKey = (name: string, description: string) => MetricKey.counter(name, { description, incremental: true })
const gaugeKey = (name: string, description: string) => MetricKey.gauge(name, { description })

/** The metrics' keys, whose metrics `ChannelMetrics` exports. */
export const keys = {
  connections: gaugeKey(names.connections, "Open connections, by transport"),
  channelsJoined: gaugeKey(names.channelsJoined, "Joined channels, by topic pattern"),
  joins: counterKey(names.joins, "Joins, by result (allowed, refused, crashed) and topic pattern"),
  eventsIn: counterKey(names.eventsIn, "Messages received from clients"),
  eventsOut: counterKey(names.eventsOut, "Messages written to clients"),
  bytesOut: counterKey(names.bytesOut, "Bytes written to clients (frame payloads)"),
  broadcastFanout: MetricKey.histogram(
    names.broadcastFanout,
    // 50 µs to 0.8 s, then +Inf.
    MetricBoundaries.exponential({ start: 0.00005, factor: 2, count: 16 }),
    "Time to hand a batch of broadcasts to every local subscriber of its topic"
  ),
  slowClientsDropped: counterKey(names.slowClientsDropped, "Clients dropped for not reading"),
  closes: counterKey(names.closes, "Connections ended, by close code (remote: ended by the client or the network)"),
  presenceEntries: gaugeKey(names.presenceEntries, "Presence entries tracked by this process")
}

type Counter = Metric.Metric.Counter<number>
type Gauge = Metric.Metric.Gauge<number>

const noTags: ReadonlyArray<MetricLabel.MetricLabel> = []

/** A metric per label value, made on first use: its updates skip the registry. */
const labelled = <Type extends MetricKeyType.MetricKeyType<number, MetricState.MetricState.Untyped>>(
  key: MetricKey.MetricKey<Type>,
  label: string
) => {
  const metrics = new Map<string, Metric.Metric<Type, number, unknown>>()
  return (value: string) => {
    let metric = metrics.get(value)
    if (metric === undefined) {
      metric = Metric.fromMetricKey(MetricKey.tagged(key, label, value)) as Metric.Metric<Type, number, unknown>
      metrics.set(value, metric)
    }
    return metric
  }
}

/** @internal */
export type JoinResult = "allowed" | "refused" | "crashed"

const connections = labelled(keys.connections, "transport")
const channelsJoined = labelled(keys.channelsJoined, "pattern")
const closes = labelled(keys.closes, "code")
const joinsBy = (result: JoinResult) => labelled(MetricKey.tagged(keys.joins, "result", result), "pattern")
const joinsByResult = { allowed: joinsBy("allowed"), refused: joinsBy("refused"), crashed: joinsBy("crashed") }
const eventsIn = Metric.fromMetricKey(keys.eventsIn) as Counter
const eventsOut = Metric.fromMetricKey(keys.eventsOut) as Counter
const bytesOut = Metric.fromMetricKey(keys.bytesOut) as Counter
const slowClientsDropped = Metric.fromMetricKey(keys.slowClientsDropped) as Counter
const presenceEntries = Metric.fromMetricKey(keys.presenceEntries) as Gauge
const broadcastFanout = Metric.fromMetricKey(keys.broadcastFanout)

/** The label value of joins to a topic that no pattern matches. @internal */
export const unmatched = "(unmatched)"

/** The label value of a plain handler's channels, which serves every topic. @internal */
export const anyTopic = "*"

/**
 * What a connection records. One instance per socket (or a no-op one when
 * metrics are off): a connection holds a reference, not a recorder of its own.
 *
 * @internal
 */
export interface Recorder {
  readonly enabled: boolean
  readonly connectionOpened: (transport: string) => void
  readonly connectionClosed: (transport: string) => void
  readonly channelJoined: (pattern: string) => void
  readonly channelLeft: (pattern: string) => void
  readonly join: (result: JoinResult, pattern: string) => void
  readonly received: () => void
  /** A frame written outside a broadcast (a reply, a push). */
  readonly sent: (frame: Frame) => void
  /** A broadcast written to one subscriber: counted in {@link fanout}, added to the metrics per batch. */
  readonly broadcastWritten: (envelope: Envelope, serializer: Serializer) => void
  /** A connection ended, with the code it was closed with, or `remote`. */
  readonly closed: (code: number | "remote") => void
  /** A client dropped for not reading; counted in closes as 1006, what it sees (no close frame is sent). */
  readonly slowClientDropped: () => void
}

/**
 * The broadcasts written since the broker last added them to the metrics:
 * plain numbers, so that a subscriber's share of a fan-out costs two additions.
 *
 * @internal
 */
export const fanout = { events: 0, bytes: 0 }

/** Adds what subscribers wrote since the last call to the metrics. @internal */
export const flushFanout = (): void => {
  if (fanout.events === 0) return
  eventsOut.unsafeUpdate(fanout.events, noTags)
  bytesOut.unsafeUpdate(fanout.bytes, noTags)
  fanout.events = 0
  fanout.bytes = 0
}

/** Records a batch's fan-out time, from a `performance.now()` taken before it. @internal */
export const fanoutTime = (startedAt: number): void => {
  broadcastFanout.unsafeUpdate((performance.now() - startedAt) / 1000, noTags)
}

/** @internal */
export const presenceTracked = (count: number): void => {
  presenceEntries.unsafeModify(count, noTags)
}

const closeLabel = (code: number | "remote") => String(code)

/** @internal */
export const recorder: Recorder = {
  enabled: true,
  connectionOpened: (transport) => connections(transport).unsafeModify(1, noTags),
  connectionClosed: (transport) => connections(transport).unsafeModify(-1, noTags),
  channelJoined: (pattern) => channelsJoined(pattern).unsafeModify(1, noTags),
  channelLeft: (pattern) => channelsJoined(pattern).unsafeModify(-1, noTags),
  join: (result, pattern) => joinsByResult[result](pattern).unsafeUpdate(1, noTags),
  received: () => eventsIn.unsafeUpdate(1, noTags),
  sent: (frame) => {
    eventsOut.unsafeUpdate(1, noTags)
    bytesOut.unsafeUpdate(byteLength(frame), noTags)
  },
  broadcastWritten: (envelope, serializer) => {
    fanout.events++
    fanout.bytes += envelope.byteLength(serializer)
  },
  closed: (code) => closes(closeLabel(code)).unsafeUpdate(1, noTags),
  slowClientDropped: () => {
    slowClientsDropped.unsafeUpdate(1, noTags)
    closes("1006").unsafeUpdate(1, noTags)
  }
}

const ignore = () => {}

/** @internal */
export const disabled: Recorder = {
  enabled: false,
  connectionOpened: ignore,
  connectionClosed: ignore,
  channelJoined: ignore,
  channelLeft: ignore,
  join: ignore,
  received: ignore,
  sent: ignore,
  broadcastWritten: ignore,
  closed: ignore,
  slowClientDropped: ignore
}

/**
 * Whether the socket, the broker and presence record metrics; read once,
 * where each is made.
 */
export class MetricsEnabled extends Context.Reference<MetricsEnabled>()("@effect-channels/MetricsEnabled", {
  defaultValue: () => true
}) {}

// Effect's built-in tracer, which keeps its spans to itself: tracing with it
// costs and shows nothing.
let builtinTracer: Tracer.Tracer | undefined

/**
 * What to record where the effect runs: metrics unless turned off, spans when
 * a tracer other than Effect's built-in one is installed and tracing is on.
 *
 * @internal
 */
export interface Telemetry {
  readonly recorder: Recorder
  readonly tracing: boolean
}

/** @internal */
export const telemetry: Effect.Effect<Telemetry> = Effect.gen(function*() {
  const enabled = yield* MetricsEnabled
  const tracer = yield* Effect.tracer
  const tracerEnabled = yield* FiberRef.get(FiberRef.currentTracerEnabled)
  builtinTracer ??= Effect.runSync(Effect.tracer)
  return { recorder: enabled ? recorder : disabled, tracing: tracerEnabled && tracer !== builtinTracer }
})

// Spans

/** The names of the spans. */
export const spanNames = {
  connect: "channels.connect",
  join: "channels.join",
  event: "channels.event",
  broadcast: "channels.broadcast"
} as const

/** @internal */
export const connectSpan = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  transport: string,
  url: string
): Effect.Effect<A, E, R> =>
  Effect.withSpan(effect, spanNames.connect, {
    kind: "server",
    attributes: { "channels.transport": transport, "channels.url": url.split("?")[0] }
  })

/** @internal */
export const joinSpan = <A, E, R>(effect: Effect.Effect<A, E, R>, topic: string): Effect.Effect<A, E, R> =>
  Effect.withSpan(effect, spanNames.join, { kind: "server", attributes: { "channels.topic": topic } })

/** Notes a join's result and pattern on its span. @internal */
export const annotateJoin = (result: JoinResult, pattern: string): Effect.Effect<void> =>
  Effect.annotateCurrentSpan({ "channels.join.result": result, "channels.pattern": pattern })

/** @internal */
export const eventSpan = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  topic: string,
  event: string
): Effect.Effect<A, E, R> =>
  Effect.withSpan(effect, spanNames.event, {
    kind: "server",
    attributes: { "channels.topic": topic, "channels.event": event }
  })

/** @internal */
export const broadcastSpan = <A, E, R>(
  effect: Effect.Effect<A, E, R>,
  topic: string,
  event: string
): Effect.Effect<A, E, R> =>
  Effect.withSpan(effect, spanNames.broadcast, {
    kind: "producer",
    attributes: { "channels.topic": topic, "channels.event": event }
  })
