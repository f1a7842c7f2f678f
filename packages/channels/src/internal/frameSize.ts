import * as Either from "effect/Either"
import type { Envelope } from "../Broker.js"
import type { Config as HistoryConfig } from "../ChannelHistory.js"
import { UnrecoverablePayload } from "../ChannelHistory.js"
import type { Frame } from "../protocol/Message.js"
import { isBinary, MessageTooLarge } from "../protocol/Message.js"
import { V2 } from "../protocol/Serializer.js"

/**
 * Whether a frame is over a limit in bytes: for a text frame, its UTF-8
 * length. A UTF-16 unit takes 1 to 3 bytes, so the UTF-8 length is counted
 * only when the string's length cannot decide.
 *
 * @internal
 */
export const overLimit = (frame: Frame, limit: number): boolean => {
  if (typeof frame !== "string") return frame.byteLength > limit
  if (frame.length > limit) return true
  if (frame.length * 3 <= limit) return false
  return utf8Length(frame) > limit
}

/**
 * The size of a frame in bytes, UTF-8 for text.
 *
 * @internal
 */
export const byteLength = (frame: Frame): number => typeof frame === "string" ? utf8Length(frame) : frame.byteLength

// A native scan for a unit past U+007F: most frames have none, and then the
// length is the string's. Twice as fast as the loop below on an ASCII frame,
// which the byte metrics measure for every frame written.
const nonAscii = /[^\x00-\x7f]/

const utf8Length = (text: string): number => {
  if (!nonAscii.test(text)) return text.length
  let bytes = text.length
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i)
    // Units past U+007F take 2 bytes, past U+07FF 3; a surrogate pair takes 4 for its 2 units.
    if (unit >= 0x80) bytes += unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff) ? 1 : 2
  }
  return bytes
}

/**
 * The refusal of a frame over `limit`, if it is over.
 *
 * @internal
 */
export const refusal = (
  frame: Frame,
  topic: string,
  event: string,
  limit: number
): MessageTooLarge | undefined =>
  overLimit(frame, limit) ? new MessageTooLarge({ topic, event, size: byteLength(frame), limit }) : undefined

/**
 * The refusal of a broadcast over `limit`, measured on its V2 frame, once:
 * the envelope keeps that frame for every V2 subscriber (the V1 frame of a
 * message, encoded for V1 subscribers only, is a few bytes longer). What
 * cannot be encoded is not refused here: no subscriber receives it. On a
 * topic with a history, a binary payload is refused: it could not carry its
 * position.
 *
 * @internal
 */
export const broadcastRefusal = (
  envelope: Envelope,
  limit: number,
  history: HistoryConfig
): MessageTooLarge | UnrecoverablePayload | undefined => {
  const { event, payload, topic } = envelope.message
  if (history.enabled && isBinary(payload) && history.of(topic) !== undefined) {
    return new UnrecoverablePayload({ topic, event })
  }
  const frame = envelope.frame(V2)
  return Either.isLeft(frame) ? undefined : refusal(frame.right, envelope.message.topic, envelope.message.event, limit)
}
