/**
 * A `ChannelEvent` is one message of a channel as a handler sees it: the
 * topic, the event name, the payload, and the refs that tie replies to
 * requests.
 *
 * ```ts
 * const NewMessage = Schema.Struct({ body: Schema.String })
 *
 * const incoming = (conn: ChannelConn, event: ChannelEvent) =>
 *   Effect.gen(function*() {
 *     const { body } = yield* ChannelEvent.decodePayload(event, NewMessage)
 *     yield* conn.broadcast("new:msg", { body })
 *   })
 * ```
 *
 * A payload that does not decode fails with {@link InvalidPayload}; left
 * unhandled, the runtime answers the client with an error reply
 * `{"reason": "invalid payload", "path": [...], "message": "..."}` and the
 * channel goes on.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { dual } from "effect/Function"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type { Payload } from "./protocol/Message.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface ChannelEvent {
  readonly topic: string
  readonly event: string
  /** A JSON value, or a `Uint8Array` for V2 binary frames. */
  readonly payload: Payload
  /** Set when the client expects a reply. */
  readonly ref: string | null
  /** The ref of the join this event belongs to. */
  readonly joinRef: string | null
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  topic: string,
  event: string,
  payload: Payload = {},
  refs: { readonly ref?: string | null; readonly joinRef?: string | null } = {}
): ChannelEvent => ({
  topic,
  event,
  payload,
  ref: refs.ref ?? null,
  joinRef: refs.joinRef ?? null
})

/**
 * Whether the payload is binary.
 *
 * @since 0.1.0
 * @category guards
 */
export const isBinary = (self: ChannelEvent): boolean => self.payload instanceof Uint8Array

/**
 * A payload that does not match the schema a handler expects.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPayload extends Data.TaggedError("InvalidPayload")<{
  readonly event: string
  readonly path: ReadonlyArray<PropertyKey>
  readonly reason: string
}> {
  override get message() {
    return `invalid payload for ${this.event} at [${this.path.map(String).join(", ")}]: ${this.reason}`
  }

  /** The error response sent to the client. */
  get response(): { readonly reason: "invalid payload"; readonly path: ReadonlyArray<string | number>; readonly message: string } {
    return {
      reason: "invalid payload",
      path: this.path.map((key) => (typeof key === "number" ? key : String(key))),
      message: this.reason
    }
  }
}

/**
 * Decodes the payload of an event with a schema.
 *
 * @since 0.1.0
 * @category combinators
 */
export const decodePayload: {
  <A, I, R>(schema: Schema.Schema<A, I, R>): (self: ChannelEvent) => Effect.Effect<A, InvalidPayload, R>
  <A, I, R>(self: ChannelEvent, schema: Schema.Schema<A, I, R>): Effect.Effect<A, InvalidPayload, R>
} = dual(2, <A, I, R>(self: ChannelEvent, schema: Schema.Schema<A, I, R>) =>
  Schema.decodeUnknown(schema)(self.payload).pipe(
    Effect.mapError((error) => {
      const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
      return new InvalidPayload({
        event: self.event,
        path: issue?.path ?? [],
        reason: issue?.message ?? error.message
      })
    })
  ))
