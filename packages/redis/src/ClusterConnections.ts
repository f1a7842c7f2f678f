/**
 * The number of connections across every node. Each node writes its own
 * count (`ChannelBroadcaster.connected`) to Redis every `heartbeatInterval`,
 * with an expiry of `nodeTimeout`: a node that stops heartbeating (killed,
 * cut off from Redis) drops out of the count once its last heartbeat
 * expires, and one that stops cleanly leaves it at once.
 *
 * @since 0.1.0
 */
import { ChannelBroadcaster } from "@effect-channels/core"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/broker.js"
import { RedisBroker, RedisBrokerConfigError } from "./RedisBroker.js"

/**
 * Redis did not answer (it is down, or unreachable from this node).
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisUnavailable extends Data.TaggedError("RedisUnavailable")<{ readonly cause: unknown }> {
  override get message() {
    return `Redis is unavailable: ${this.cause instanceof Error ? this.cause.message : String(this.cause)}`
  }
}

/**
 * A node and its connection count at its last heartbeat.
 *
 * @since 0.1.0
 * @category models
 */
export interface NodeCount {
  readonly nodeId: string
  readonly connected: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Connections open on every live node, as of their last heartbeats. */
  readonly connected: Effect.Effect<number, RedisUnavailable>
  /** The live nodes and their counts. */
  readonly nodes: Effect.Effect<ReadonlyArray<NodeCount>, RedisUnavailable>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ClusterConnections extends Context.Tag("@effect-channels/redis/ClusterConnections")<
  ClusterConnections,
  Service
>() {}

/**
 * Heartbeats this node's count for the life of the layer (and removes it on
 * the way out), and reads the others'. Fails with `RedisBrokerConfigError`
 * if another live node has this node's id.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<
  ClusterConnections,
  RedisBrokerConfigError,
  RedisBroker | ChannelBroadcaster.ChannelBroadcaster
> =
  Layer.scoped(
    ClusterConnections,
    Effect.gen(function*() {
      const node = yield* RedisBroker
      const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
      const machinery = internal.nodes.get(node)
      if (machinery === undefined) {
        return yield* Effect.dieMessage("ClusterConnections needs the RedisBroker of RedisBroker.layer")
      }
      const { config, made } = machinery
      const keys = [`{${config.prefix}}:nodes`, `{${config.prefix}}:counts`, `{${config.prefix}}:instances`]
      // Which process holds this node id: the same id given to a second live process is refused.
      const instance = globalThis.crypto.randomUUID()
      const ttl = String(Duration.toMillis(config.nodeTimeout))
      // Bounded: a Redis that accepts connections but does not answer must not hang a caller.
      const call = (name: "heartbeat" | "count" | "goodbye", args: Array<string>) =>
        Effect.tryPromise({ try: () => made.link.script(name, keys, args), catch: (cause) => new RedisUnavailable({ cause }) }).pipe(
          Effect.timeoutFail({
            duration: config.subscribeTimeout,
            onTimeout: () => new RedisUnavailable({ cause: new Error("no answer") })
          })
        )

      const beat = Effect.flatMap(
        broadcaster.connected,
        (count) => call("heartbeat", [config.nodeId, String(count), ttl, instance])
      )
      const inUse = `nodeId ${JSON.stringify(config.nodeId)} is in use by another live node`
      // The first heartbeat before the layer is up, so that a duplicate id
      // fails it; Redis unreachable: the later heartbeats will tell.
      const first = yield* Effect.either(beat)
      if (first._tag === "Right" && first.right === 0) {
        return yield* new RedisBrokerConfigError({ problems: [inUse] })
      }
      const heartbeat = beat.pipe(
        Effect.flatMap((accepted) =>
          accepted === 0 ? Effect.logError(`effect-channels/redis: ${inUse}; this node is not counted`) : Effect.void
        ),
        Effect.catchAll((error) => Effect.logDebug("effect-channels/redis: heartbeat failed", error.message))
      )
      yield* Effect.forkScoped(Effect.forever(Effect.zipRight(Effect.sleep(config.heartbeatInterval), heartbeat)))
      yield* Effect.addFinalizer(() => Effect.ignore(Effect.timeout(call("goodbye", [config.nodeId, instance]), "1 second")))

      const nodes = Effect.map(call("count", []), (reply) => {
        const flat = reply as ReadonlyArray<string>
        const result: Array<NodeCount> = []
        for (let i = 0; i + 1 < flat.length; i += 2) {
          result.push({ nodeId: String(flat[i]), connected: Number(flat[i + 1]) })
        }
        return result
      })
      return {
        nodes,
        connected: Effect.map(nodes, (all) => all.reduce((sum, node) => sum + node.connected, 0))
      } satisfies Service
    })
  )
