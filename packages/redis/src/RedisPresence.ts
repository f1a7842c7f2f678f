/**
 * Presence across nodes: the entries tracked on every node, replicated over
 * Redis, so that the `Presence` of a `phoenix` client shows the whole cluster
 * whichever node it is connected to.
 *
 * ```ts
 * import { Presence } from "@effect-channels/core"
 * import { RedisPresence } from "@effect-channels/redis"
 *
 * const PresenceLive = Presence.layerWithStore({ batchWindow: "1 second" }).pipe(
 *   Layer.provide(RedisPresence.layer({ url: "redis://127.0.0.1:6379", prefix: "chat" }))
 * )
 * ```
 *
 * It is a `PresenceStore`: the `Presence` service of core runs on it
 * unchanged (refs, batching, `presence_state` and `presence_diff`), and a
 * client on node B gets, in `presence_state`, the entries tracked on node A,
 * then every diff after.
 *
 * - Only the node where a change happened announces it, to the other nodes;
 *   each node turns what it learns into diffs for its own clients, batched per
 *   topic as on one node. Diffs go to a node's own subscribers only
 *   (`Broker.publishLocal`), so that with a broker spanning nodes
 *   (`RedisBroker`) a diff still reaches each client once, from its own node.
 *   It works the same with the local broker on each node.
 * - A node that stops cleanly says goodbye: the others drop its entries at
 *   once. A node that goes silent (killed, partitioned) is dropped after
 *   `downAfter` (default 30 s, as Phoenix), and its entries leave. A node
 *   comes back with a new node id and nothing tracked.
 * - Redis keeps nothing. After an outage every node announces its whole
 *   state again and asks for the others', and the copies converge without a
 *   restart. Meanwhile each node goes on with its own entries; what another
 *   node changed meanwhile reaches it when Redis is back, and a node silent
 *   for `downAfter` (an outage that long) has its entries leave, then join
 *   again. A node started while Redis is away serves alone until it is back.
 * - Metas travel as JSON; one that JSON cannot carry (a BigInt, a cycle)
 *   stays on its node, with a warning.
 *
 * @since 0.1.0
 */
import { type Broker, Presence } from "@effect-channels/core"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as config from "./internal/presenceConfig.js"
import * as internal from "./internal/presenceStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The Redis server; default `redis://127.0.0.1:6379`. */
  readonly url?: string | undefined
  /** Names this cluster's channel on Redis (`{prefix}:presence`); default `effect-channels`. */
  readonly prefix?: string | undefined
  /** This node's id, unique in the cluster; default a random one, new at each start. */
  readonly nodeId?: string | undefined
  /** How long a node may stay silent before the others drop its entries; default 30 seconds. */
  readonly downAfter?: Duration.DurationInput | undefined
  /** How often a node says it is alive; default 1.5 s, or a third of `downAfter` if shorter. */
  readonly heartbeatInterval?: Duration.DurationInput | undefined
  /**
   * How long starting waits for Redis; default 5 seconds. Past it, the node
   * starts alone (with a warning) and joins the others once Redis answers.
   */
  readonly connectTimeout?: Duration.DurationInput | undefined
}

/**
 * The options are invalid (every problem is in the message).
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisPresenceError extends Data.TaggedError("RedisPresenceError")<{
  readonly reason: "InvalidOptions"
  readonly message: string
}> {}

/**
 * A replicated store, for the life of the scope; closing the scope says
 * goodbye to the other nodes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Presence.Store, RedisPresenceError, Scope.Scope> =>
  Either.match(config.resolve(options), {
    onLeft: (problems) => Effect.fail(new RedisPresenceError({ reason: "InvalidOptions", message: problems.join("; ") })),
    onRight: internal.make
  })

/**
 * The replicated `PresenceStore`, for `Presence.layerWithStore`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Presence.PresenceStore, RedisPresenceError> =>
  Layer.scoped(Presence.PresenceStore, make(options))

/**
 * The `Presence` service on the replicated store: `layer` under
 * `Presence.layerWithStore`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPresence = (
  options: Options & Presence.Options = {}
): Layer.Layer<Presence.Presence, RedisPresenceError, Broker.Broker> =>
  Presence.layerWithStore(options).pipe(Layer.provide(layer(options)))
