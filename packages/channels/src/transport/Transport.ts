/**
 * What the channel runtime needs from a transport: a way to write frames, to
 * know how much is written but not yet flushed, and to close. Transports
 * (WebSocket, long-poll, the in-memory one of `ChannelTest`) adapt to it and
 * feed received frames to the connection; the protocol lives in the runtime
 * once, for all of them.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { Frame } from "../protocol/Message.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Transport {
  /** Queues a frame for the client; never blocks. */
  readonly send: (frame: Frame) => void
  /** Queues frames for the client, written together where the transport can. */
  readonly sendAll: (frames: ReadonlyArray<Frame>) => void
  /** Bytes queued for the client and not yet flushed. */
  readonly bufferedAmount: () => number
  /** Closes the transport; the connection ends when the transport has closed. */
  readonly close: (code: number, reason: string) => void
  /** Closes the transport at once, without waiting for the client (one that does not read). */
  readonly abort: () => void
}

/**
 * What a transport tells the connection: each frame received, in order, then
 * that it has closed.
 *
 * @since 0.1.0
 * @category models
 */
export interface Listener {
  readonly onFrame: (frame: Frame) => void
  readonly onClose: () => void
}

/**
 * A transport once opened: what the runtime writes to, and how it listens.
 * A transport's server makes one per connection and hands it to
 * `ChannelSocket.accept`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Opened {
  readonly transport: Transport
  /**
   * `false` for a transport whose client sends no heartbeats (long-poll): the
   * connection is then never closed for silence, and the transport ends it
   * when its client is gone. Default `true`.
   */
  readonly heartbeats?: boolean | undefined
  /**
   * Starts telling `listener` the frames received, in order (those received
   * before the call first), then the close.
   */
  readonly listen: (listener: Listener) => Effect.Effect<void, never, Scope.Scope>
}

/**
 * Close codes the runtime uses.
 *
 * @since 0.1.0
 * @category constants
 */
export const CloseCode = {
  normal: 1000,
  goingAway: 1001,
  invalidPayload: 1007,
  policyViolation: 1008,
  messageTooBig: 1009,
  internalError: 1011,
  tryAgainLater: 1013
} as const
