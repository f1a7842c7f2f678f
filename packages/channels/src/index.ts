/**
 * effect-channels: a Phoenix Channels server for Effect.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as Broker from "./Broker.js"
/** @since 0.1.0 */
export * as ChannelBroadcaster from "./ChannelBroadcaster.js"
/** @since 0.1.0 */
export * as ChannelConn from "./ChannelConn.js"
/** @since 0.1.0 */
export * as ChannelEvent from "./ChannelEvent.js"
/** @since 0.1.0 */
export * as ChannelHandler from "./ChannelHandler.js"
/** @since 0.1.0 */
export * as ChannelHistory from "./ChannelHistory.js"
/** @since 0.1.0 */
export * as ChannelMetrics from "./ChannelMetrics.js"
/** @since 0.1.0 */
export * as ChannelRouter from "./ChannelRouter.js"
/** @since 0.1.0 */
export * as ChannelSocket from "./ChannelSocket.js"
/** @since 0.1.0 */
export * as LongPoll from "./transport/LongPoll.js"
/** @since 0.1.0 */
export * as Message from "./protocol/Message.js"
/** @since 0.1.0 */
export * as Presence from "./Presence.js"
/** @since 0.1.0 */
export * as Serializer from "./protocol/Serializer.js"
/** @since 0.1.0 */
export * as SessionRelay from "./transport/SessionRelay.js"
/** @since 0.1.0 */
export * as Transport from "./transport/Transport.js"
/** @since 0.1.0 */
export * as WebSocket from "./transport/WebSocket.js"
/** @since 0.1.0 */
export * as ChannelTest from "./ChannelTest.js"
/** @since 0.1.0 */
export * as ClientCodec from "./protocol/ClientCodec.js"
