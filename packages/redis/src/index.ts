/**
 * Several effect-channels nodes on Redis: broadcasts, socket disconnects and
 * counts across nodes (`RedisBroker`, `ClusterConnections`), and presence
 * replicated between them (`RedisPresence`), long-poll sessions served by
 * whichever node a request reaches (`RedisLongPoll`).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ClusterConnections from "./ClusterConnections.js"
/** @since 0.1.0 */
export * as RedisBroker from "./RedisBroker.js"
/** @since 0.1.0 */
export * as RedisLongPoll from "./RedisLongPoll.js"
/** @since 0.1.0 */
export * as RedisPresence from "./RedisPresence.js"
