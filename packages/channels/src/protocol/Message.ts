/**
 * The messages of the Phoenix Channels protocol, independent of how they are
 * serialized: what a client sends ({@link Message}) and what the server writes
 * back ({@link Outbound}: a push, a reply or a broadcast).
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"

/**
 * A payload: a JSON value, or raw bytes carried by V2 binary frames.
 *
 * @since 0.1.0
 * @category models
 */
export type Payload = unknown

/**
 * A frame as it travels on a transport: text for JSON, bytes for binary.
 *
 * @since 0.1.0
 * @category models
 */
export type Frame = string | Uint8Array

/**
 * A message received from a client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly joinRef: string | null
  readonly ref: string | null
  readonly topic: string
  readonly event: string
  readonly payload: Payload
}

/**
 * A message pushed by the server to one client, outside any reply. `ref` is
 * only set for `phx_close`, which Phoenix sends with `ref = join_ref`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Push {
  readonly _tag: "Push"
  readonly joinRef: string | null
  readonly ref: string | null
  readonly topic: string
  readonly event: string
  readonly payload: Payload
}

/**
 * The status of a reply.
 *
 * @since 0.1.0
 * @category models
 */
export type ReplyStatus = "ok" | "error"

/**
 * The answer to a client message that carried a `ref`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reply {
  readonly _tag: "Reply"
  readonly joinRef: string | null
  readonly ref: string | null
  readonly topic: string
  readonly status: ReplyStatus
  readonly response: Payload
}

/**
 * A message for every subscriber of a topic. It is encoded once per
 * serializer, however many subscribers receive it (the "fastlane").
 *
 * @since 0.1.0
 * @category models
 */
export interface Broadcast {
  readonly _tag: "Broadcast"
  readonly topic: string
  readonly event: string
  readonly payload: Payload
}

/**
 * Anything the server writes to a client.
 *
 * @since 0.1.0
 * @category models
 */
export type Outbound = Push | Reply | Broadcast

/**
 * The events the protocol reserves.
 *
 * @since 0.1.0
 * @category constants
 */
export const Events = {
  join: "phx_join",
  leave: "phx_leave",
  reply: "phx_reply",
  close: "phx_close",
  error: "phx_error",
  heartbeat: "heartbeat"
} as const

/**
 * The topic of socket-level messages such as `heartbeat`.
 *
 * @since 0.1.0
 * @category constants
 */
export const socketTopic = "phoenix"

/**
 * @since 0.1.0
 * @category constructors
 */
export const push = (
  joinRef: string | null,
  topic: string,
  event: string,
  payload: Payload,
  ref: string | null = null
): Push => ({ _tag: "Push", joinRef, ref, topic, event, payload })

/**
 * @since 0.1.0
 * @category constructors
 */
export const reply = (
  joinRef: string | null,
  ref: string | null,
  topic: string,
  status: ReplyStatus,
  response: Payload = {}
): Reply => ({ _tag: "Reply", joinRef, ref, topic, status, response })

/**
 * @since 0.1.0
 * @category constructors
 */
export const broadcast = (topic: string, event: string, payload: Payload): Broadcast => ({
  _tag: "Broadcast",
  topic,
  event,
  payload
})

/**
 * Whether a payload is binary (sent as a V2 binary frame) rather than JSON.
 *
 * @since 0.1.0
 * @category guards
 */
export const isBinary = (payload: Payload): payload is Uint8Array => payload instanceof Uint8Array

/**
 * An outbound message refused at the call (`conn.push`, `conn.reply`,
 * `conn.broadcast`, `conn.broadcastFrom`, `ChannelBroadcaster.broadcast`):
 * its encoded frame is `size` bytes, over the `limit` (the socket's or the
 * broadcaster's `maxOutboundSize`). Nothing was sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class MessageTooLarge extends Data.TaggedError("MessageTooLarge")<{
  readonly topic: string
  readonly event: string
  readonly size: number
  readonly limit: number
}> {
  override get message() {
    return `message too large: ${this.event} on ${this.topic} is ${this.size} bytes, over the limit of ${this.limit}`
  }
}
