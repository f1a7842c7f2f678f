/**
 * effect-channels on several nodes, over Redis.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as RedisPresence from "./RedisPresence.js"
