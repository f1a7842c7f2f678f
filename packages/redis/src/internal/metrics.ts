import * as Metric from "effect/Metric"

/**
 * The Redis broker's metrics, beside the core's `effect_channels_*`: Effect
 * metrics in the global registry, updated synchronously where each thing
 * happens (in ioredis's callbacks, outside any fiber).
 *
 * @internal
 */
export const names = {
  published: "effect_channels_redis_published",
  received: "effect_channels_redis_received",
  dropped: "effect_channels_redis_dropped",
  malformed: "effect_channels_redis_malformed",
  topics: "effect_channels_redis_topics"
} as const

const counter = (name: string, description: string) => Metric.counter(name, { description, incremental: true })

/** @internal */
export const metrics = {
  published: counter(names.published, "Broadcasts to other nodes that Redis acknowledged"),
  received: counter(names.received, "Broadcasts received from Redis: from other nodes, and a node's own on topics with a history"),
  dropped: counter(
    names.dropped,
    "Broadcasts to other nodes, or on topics with a history, dropped: Redis unreachable, too many pending, or not JSON"
  ),
  malformed: counter(names.malformed, "Messages from Redis that could not be read (another format version)"),
  topics: Metric.gauge(names.topics, { description: "Topics this node is subscribed to at Redis" })
}
