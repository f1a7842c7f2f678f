/**
 * Node.js specifics for effect-channels.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as NodeChannelServer from "./NodeChannelServer.js"
/** @since 0.1.0 */
export * as NodeWebSocketServer from "./NodeWebSocketServer.js"
