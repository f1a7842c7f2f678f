/**
 * What a socket records: Effect `Metric`s in Effect's global registry, and
 * spans through Effect's tracer. Anything that reads Effect's metrics exports
 * them (`@effect/opentelemetry`'s `Metrics.layer` with OpenTelemetry's
 * Prometheus exporter, for one), and an application that installs a tracer
 * (`@effect/opentelemetry`'s `NodeSdk.layer`) gets the spans, with no code
 * of its own.
 *
 * | metric | type | labels |
 * | --- | --- | --- |
 * | `effect_channels_connections` | gauge | `transport` |
 * | `effect_channels_channels_joined` | gauge | `pattern` (the `ChannelRouter` pattern; `*` for a plain handler) |
 * | `effect_channels_joins` | counter | `result` (`allowed`, `refused`, `crashed`), `pattern` (`(unmatched)` for a topic no pattern matches) |
 * | `effect_channels_events_in` | counter | |
 * | `effect_channels_events_out` | counter | |
 * | `effect_channels_bytes_out` | counter | |
 * | `effect_channels_broadcast_fanout_seconds` | histogram | |
 * | `effect_channels_slow_clients_dropped` | counter | |
 * | `effect_channels_closes` | counter | `code` (the close code sent; `1006` for a client dropped for not reading; `remote` for one the client or the network ended) |
 * | `effect_channels_presence_entries` | gauge | |
 *
 * Events count messages (every frame received; every message written,
 * each subscriber's copy of a broadcast included); bytes count frame
 * payloads as written. The fan-out histogram is the time the broker takes
 * to hand a batch of broadcasts to every local subscriber of its topic.
 * Labels are bounded: topics are not labels.
 *
 * Spans: `channels.connect` (admission: `vsn`, origin, the `connect` hook,
 * opening the transport), `channels.join` (`channels.topic`,
 * `channels.pattern`, `channels.join.result`), `channels.event` around each
 * event a channel handles (`channels.topic`, `channels.event`), and
 * `channels.broadcast` around each publication (`channels.topic`,
 * `channels.event`). Whether to trace is decided where a socket, broker or
 * presence is made: with no tracer installed but Effect's own, nothing is
 * traced, and nothing is paid for it.
 *
 * The metrics are updated synchronously (they do not take the fiber's
 * metric labels), at a cost measured in the benchmark; `layerDisabled` turns
 * them off.
 *
 * @since 0.1.0
 */
import type * as Context from "effect/Context"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as internal from "./internal/metrics.js"

/**
 * The names of the metrics. A Prometheus exporter adds `_total` to a
 * counter's name.
 *
 * @since 0.1.0
 * @category constants
 */
export const names = internal.names

/**
 * The names of the spans.
 *
 * @since 0.1.0
 * @category constants
 */
export const spanNames = internal.spanNames

/**
 * Open connections; label `transport`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const connections = Metric.fromMetricKey(internal.keys.connections)

/**
 * Joined channels; label `pattern`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const channelsJoined = Metric.fromMetricKey(internal.keys.channelsJoined)

/**
 * Joins; labels `result` and `pattern`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const joins = Metric.fromMetricKey(internal.keys.joins)

/**
 * @since 0.1.0
 * @category metrics
 */
export const eventsIn = Metric.fromMetricKey(internal.keys.eventsIn)

/**
 * @since 0.1.0
 * @category metrics
 */
export const eventsOut = Metric.fromMetricKey(internal.keys.eventsOut)

/**
 * @since 0.1.0
 * @category metrics
 */
export const bytesOut = Metric.fromMetricKey(internal.keys.bytesOut)

/**
 * Seconds to hand a batch of broadcasts to every local subscriber.
 *
 * @since 0.1.0
 * @category metrics
 */
export const broadcastFanout = Metric.fromMetricKey(internal.keys.broadcastFanout)

/**
 * @since 0.1.0
 * @category metrics
 */
export const slowClientsDropped = Metric.fromMetricKey(internal.keys.slowClientsDropped)

/**
 * Connections ended; label `code`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const closes = Metric.fromMetricKey(internal.keys.closes)

/**
 * Presence entries tracked by this process.
 *
 * @since 0.1.0
 * @category metrics
 */
export const presenceEntries = Metric.fromMetricKey(internal.keys.presenceEntries)

/**
 * Whether sockets, the local broker and presence record metrics (default
 * `true`); read when each is made.
 *
 * @since 0.1.0
 * @category references
 */
export const MetricsEnabled: Context.Reference<internal.MetricsEnabled, boolean> = internal.MetricsEnabled

/**
 * Turns the metrics off for the layers it is provided to.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerDisabled: Layer.Layer<internal.MetricsEnabled> = Layer.succeed(internal.MetricsEnabled, false)
