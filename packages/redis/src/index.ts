/**
 * Several effect-channels nodes on Redis.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as ClusterConnections from "./ClusterConnections.js"
/** @since 0.1.0 */
export * as RedisBroker from "./RedisBroker.js"
