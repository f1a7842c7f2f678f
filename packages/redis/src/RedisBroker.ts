/**
 * A `Broker` that spans nodes over Redis pub/sub: a broadcast published on
 * any node reaches the subscribers of its topic on every node.
 *
 * ```ts
 * import { RedisBroker } from "@effect-channels/redis"
 *
 * // Broker, ChannelBroadcaster (broadcast and disconnect reach every node),
 * // ClusterConnections (the cluster-wide count) and RedisBroker (this node).
 * const Channels = Lobby.pipe(
 *   Layer.provideMerge(RedisBroker.layerBroadcaster({ url: "redis://127.0.0.1:6379", prefix: "chat" }))
 * )
 * ```
 *
 * A node subscribes to a topic's Redis channel (`<prefix>:<topic>`) when its
 * first local subscriber joins, and unsubscribes after its last one leaves:
 * a node receives only the topics it serves. Delivery on each node is the
 * local broker's, unchanged: one fiber per topic, one encode per serializer,
 * batched writes. A node's own broadcasts reach its local subscribers at
 * once (and once: the copy Redis sends back is skipped), so that delivery
 * within a node goes on while Redis is down.
 *
 * Order: the broadcasts of one sender reach every subscriber on every node in
 * the order sent (one Redis connection per node, and Redis keeps the order of
 * a connection's messages). Delivery is at most once: a broadcast sent while
 * Redis is unreachable, or while a node is reconnecting, does not reach the
 * other nodes, and is counted in `stats.dropped`.
 *
 * Histories: with `ChannelHistory` provided to its layer, the broker keeps
 * the histories of the matching topics in Redis, so that a client rejoining
 * on any node recovers what it missed.
 *
 * ```ts
 * RedisBroker.layerBroadcaster({ url, prefix: "chat" }).pipe(
 *   Layer.provide(ChannelHistory.layer({ "rooms:*": { size: 100, ttl: "2 minutes" } }))
 * )
 * ```
 *
 * Per topic, a hash `<prefix>:history-meta:<topic>` (`epoch`, `offset`;
 * expires `positionTtl` after the last broadcast or recovery) and a stream
 * `<prefix>:history:<topic>` (an entry per broadcast, id `<offset>-0`, trimmed
 * to `size`, expiring `ttl` after the last broadcast, entries older than
 * `ttl` never replayed). One Lua script gives a broadcast its position,
 * stores it and publishes it, so Redis orders a topic's broadcasts for every
 * node, the sender's included: a node delivers them as Redis sends them
 * back, never before. While Redis is unreachable they are dropped (and
 * counted), not delivered without a position. A node fills the gaps of its
 * subscription (a dropped subscriber connection) from the stream. A Redis
 * that restarts with its data keeps the histories; one that comes back empty
 * lost them, and the next broadcast or join starts a new epoch: clients
 * rejoining then get `_recovered: false`.
 *
 * @since 0.1.0
 */
import { Broker, ChannelBroadcaster } from "@effect-channels/core"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as ClusterConnections from "./ClusterConnections.js"
import * as internal from "./internal/broker.js"
import * as Config from "./internal/config.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The Redis server: `redis://[user:password@]host:port[/db]` (`rediss://` for TLS). Default `redis://127.0.0.1:6379`. */
  readonly url?: string
  /**
   * A Redis Cluster instead of one server: some of its masters as URLs. With
   * `sharded` (the default), SSUBSCRIBE/SPUBLISH (Redis 7): each topic travels
   * on the shard of its slot only, so pub/sub load spreads across shards.
   */
  readonly cluster?: { readonly nodes: ReadonlyArray<string>; readonly sharded?: boolean }
  /** Prefixes every Redis channel and key, so that several applications share a Redis. Default `effect-channels`. */
  readonly prefix?: string
  /** This node's id, unique in the cluster. Default: 72 random bits. */
  readonly nodeId?: string
  /** Publishes sent to Redis and not yet acknowledged, past which broadcasts to other nodes are dropped. Default 10,000. */
  readonly maxPendingPublishes?: number
  /** How long starting waits for Redis before serving this node alone (it joins once Redis is reachable). Default 5 s. */
  readonly connectTimeout?: Duration.DurationInput
  /** How long a join waits for its topic's SUBSCRIBE, and a cluster-wide count or a history read for Redis's answer. Default 2 s. */
  readonly subscribeTimeout?: Duration.DurationInput
  /** How often a node writes its connection count to Redis. Default 5 s. */
  readonly heartbeatInterval?: Duration.DurationInput
  /** How long after its last heartbeat a node leaves the cluster-wide count. Default 15 s. */
  readonly nodeTimeout?: Duration.DurationInput
}

/**
 * Options that cannot work, every problem listed in the message.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisBrokerConfigError extends Data.TaggedError("RedisBrokerConfigError")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message() {
    return `invalid RedisBroker options: ${this.problems.join("; ")}`
  }
}

/**
 * What a node counts. Broadcasts to other nodes (or on a topic with a
 * history, to any) that were dropped (Redis unreachable, too many pending, a
 * payload JSON cannot carry) are in `dropped`; messages from Redis that could
 * not be read (another format version, not ours) in `malformed`; `received`
 * counts the broadcasts Redis brought, a node's own on topics with a history
 * included.
 *
 * @since 0.1.0
 * @category models
 */
export interface Stats {
  readonly published: number
  readonly received: number
  readonly dropped: number
  readonly malformed: number
  /** Topics this node is subscribed to at Redis. */
  readonly topics: number
}

/**
 * This node, as the Redis broker sees it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly nodeId: string
  readonly prefix: string
  readonly stats: Effect.Effect<Stats>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class RedisBroker extends Context.Tag("@effect-channels/redis/RedisBroker")<RedisBroker, Service>() {}

/**
 * The broker and this node's service, for the life of the scope (the Redis
 * connections are closed with it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<{ readonly broker: Broker.Service; readonly node: Service }, RedisBrokerConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const resolved = Config.resolve(options)
    if (Either.isLeft(resolved)) return yield* new RedisBrokerConfigError({ problems: resolved.left })
    const config = resolved.right
    const made = yield* internal.make(config)
    const node: Service = {
      nodeId: config.nodeId,
      prefix: config.prefix,
      stats: Effect.sync(() => ({ ...made.stats, topics: made.topics() }))
    }
    internal.nodes.set(node, { made, config })
    return { broker: made.broker, node }
  })

/**
 * The Redis broker as the `Broker`, with this node's `RedisBroker`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Broker.Broker | RedisBroker, RedisBrokerConfigError> =>
  Layer.scopedContext(Effect.map(make(options), ({ broker, node }) =>
    Context.make(Broker.Broker, broker).pipe(Context.add(RedisBroker, node))))

/**
 * The broker and the broadcaster over Redis, as `ChannelBroadcaster.layerLocal`
 * is in one process: `broadcast` and `disconnect(socketId)` reach every node,
 * `connected` counts this node's connections, and `ClusterConnections` counts
 * every node's.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerBroadcaster = (
  options: Options = {}
): Layer.Layer<
  Broker.Broker | ChannelBroadcaster.ChannelBroadcaster | RedisBroker | ClusterConnections.ClusterConnections,
  RedisBrokerConfigError
> =>
  ClusterConnections.layer.pipe(
    Layer.provideMerge(ChannelBroadcaster.layer),
    Layer.provideMerge(layer(options))
  )
