/**
 * The client side of effect-channels: missed-message recovery for the
 * official `phoenix` client.
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export * as RecoverableChannel from "./RecoverableChannel.js"
