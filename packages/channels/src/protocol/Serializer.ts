/**
 * Serializers turn frames into {@link Message}s and {@link Outbound} messages
 * into frames. The `vsn` query parameter of a connection picks one: `1.x` (or
 * none) is {@link V1}, `2.x` is {@link V2}.
 *
 * - V1: JSON objects `{topic, event, payload, ref, join_ref}`, text only.
 * - V2: JSON arrays `[join_ref, ref, topic, event, payload]`, plus binary
 *   frames whose header fields are length-prefixed by one byte each.
 *
 * Decoding bounds how deeply a payload nests arrays and objects
 * ({@link Limits}): a frame nested deeper is malformed, and never reaches a
 * handler. The check costs nothing on a frame with few containers (the count
 * of `[` and `{` decides), and a walk of the parsed value, at most the limit
 * deep, on the others. Encoding never throws: what `JSON.stringify` refuses
 * (a cycle, a `BigInt`, a value nested too deep for the stack) is an
 * {@link UnencodableMessage}.
 *
 * @since 0.1.0
 */
import * as Data from "effect/Data"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import type { Frame, Message, Outbound } from "./Message.js"
import { Events, isBinary } from "./Message.js"

/**
 * A frame that is not a message of the serializer's protocol.
 *
 * @since 0.1.0
 * @category errors
 */
export class MalformedMessage extends Data.TaggedError("MalformedMessage")<{
  readonly reason: string
}> {
  override get message() {
    return `malformed message: ${this.reason}`
  }
}

/**
 * An outbound message this serializer cannot represent: binary in V1, or a
 * binary frame header field longer than 255 bytes.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnencodableMessage extends Data.TaggedError("UnencodableMessage")<{
  readonly reason: string
}> {
  override get message() {
    return `unencodable message: ${this.reason}`
  }
}

/**
 * What decoding accepts.
 *
 * @since 0.1.0
 * @category models
 */
export interface Limits {
  /**
   * How deeply a payload may nest arrays and objects: `1` is `{}` or `[]`,
   * `{"a": [1]}` is 2. Default {@link defaultMaxNestingDepth}.
   */
  readonly maxNestingDepth?: number | undefined
}

/**
 * The default payload nesting depth: deeper than any protocol message (a
 * presence state is 4), far from what overflows a stack when the payload is
 * encoded again (thousands).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultMaxNestingDepth = 64

/**
 * @since 0.1.0
 * @category models
 */
export interface Serializer {
  /** The protocol version this serializer speaks. */
  readonly vsn: "1.0.0" | "2.0.0"
  /** Decodes one frame received from a client. */
  readonly decode: (frame: Frame) => Either.Either<Message, MalformedMessage>
  /** Encodes one message for a client. */
  readonly encode: (message: Outbound) => Either.Either<Frame, UnencodableMessage>
}

const isRef = (u: unknown): u is string | null => u === null || typeof u === "string"

/** Whether `value`, at `depth`, nests no container deeper than `max`: at most `max` calls deep. */
const nestsWithin = (value: object, depth: number, max: number): boolean => {
  if (depth > max) return false
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const item: unknown = value[i]
      if (typeof item === "object" && item !== null && !nestsWithin(item, depth + 1, max)) return false
    }
    return true
  }
  for (const key in value) {
    const item: unknown = (value as Record<string, unknown>)[key]
    if (typeof item === "object" && item !== null && !nestsWithin(item, depth + 1, max)) return false
  }
  return true
}

/** Whether `text` holds at most `max` opening brackets and braces (in strings too): then no value in it nests deeper. */
const fewContainers = (text: string, max: number): boolean => {
  // Native `indexOf` scans: cheaper than a loop over the characters, and than a walk of the parsed value.
  let count = 0
  for (let i = text.indexOf("["); i !== -1; i = text.indexOf("[", i + 1)) if (++count > max) return false
  for (let i = text.indexOf("{"); i !== -1; i = text.indexOf("{", i + 1)) if (++count > max) return false
  return true
}

/**
 * Parses a frame whose root container holds the payload: the frame may nest
 * one deeper than the payload. A frame shorter than two brackets per level
 * cannot nest deeper, nor can one with fewer brackets than levels.
 */
const parseFrame = (text: string, maxDepth: number): Either.Either<unknown, MalformedMessage> => {
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return Either.left(new MalformedMessage({ reason: "invalid JSON" }))
  }
  const frameDepth = maxDepth + 1
  if (
    text.length <= 2 * frameDepth + 1 || typeof json !== "object" || json === null ||
    fewContainers(text, frameDepth) || nestsWithin(json, 1, frameDepth)
  ) return Either.right(json)
  return Either.left(new MalformedMessage({ reason: `payload nested deeper than ${maxDepth}` }))
}

/** `JSON.stringify`, which throws on a cycle, a `BigInt` or a value too deep for the stack, as an `Either`. */
const stringify = (value: unknown): Either.Either<Frame, UnencodableMessage> => {
  try {
    return Either.right(JSON.stringify(value))
  } catch (error) {
    return Either.left(new UnencodableMessage({ reason: `not JSON: ${error instanceof Error ? error.message : String(error)}` }))
  }
}

const replyPayload = (status: string, response: unknown) => ({ status, response })

const v1Binary = new UnencodableMessage({ reason: "V1 cannot carry binary payloads" })

/**
 * The V1 JSON serializer: `{"topic", "event", "payload", "ref", "join_ref"}`.
 * Outgoing messages carry no `join_ref`; binary payloads cannot be sent.
 *
 * @since 0.1.0
 * @category serializers
 */
export const v1 = (limits: Limits = {}): Serializer => {
  const maxDepth = limits.maxNestingDepth ?? defaultMaxNestingDepth
  return {
    vsn: "1.0.0",
    decode(frame) {
      if (typeof frame !== "string") {
        return Either.left(new MalformedMessage({ reason: "V1 accepts text frames only" }))
      }
      return Either.flatMap(parseFrame(frame, maxDepth), (json) => {
        if (typeof json !== "object" || json === null || Array.isArray(json)) {
          return Either.left(new MalformedMessage({ reason: "expected a JSON object" }))
        }
        const { event, join_ref = null, payload, ref, topic } = json as Record<string, unknown>
        if (typeof topic !== "string" || typeof event !== "string") {
          return Either.left(new MalformedMessage({ reason: "topic and event must be strings" }))
        }
        if (!isRef(ref) || !isRef(join_ref)) {
          return Either.left(new MalformedMessage({ reason: "ref and join_ref must be strings or null" }))
        }
        if (payload === undefined) {
          return Either.left(new MalformedMessage({ reason: "payload is missing" }))
        }
        return Either.right({ joinRef: join_ref, ref, topic, event, payload })
      })
    },
    encode(message) {
      switch (message._tag) {
        case "Reply":
          if (isBinary(message.response)) return Either.left(v1Binary)
          return stringify({
            topic: message.topic,
            event: Events.reply,
            payload: replyPayload(message.status, message.response),
            ref: message.ref
          })
        case "Push":
        case "Broadcast":
          if (isBinary(message.payload)) return Either.left(v1Binary)
          return stringify({
            topic: message.topic,
            event: message.event,
            payload: message.payload,
            ref: message._tag === "Push" ? message.ref : null
          })
      }
    }
  }
}

/**
 * The V1 serializer with the default limits.
 *
 * @since 0.1.0
 * @category serializers
 */
export const V1: Serializer = v1()

const PUSH = 0
const REPLY = 1
const BROADCAST = 2

const encoder = new TextEncoder()
const decoder = new TextDecoder("utf-8", { fatal: true })

const decodeBinary = (bytes: Uint8Array): Either.Either<Message, MalformedMessage> => {
  if (bytes.length < 5 || bytes[0] !== PUSH) {
    return Either.left(new MalformedMessage({ reason: "binary frames from clients must be pushes (kind 0)" }))
  }
  const lengths = [bytes[1]!, bytes[2]!, bytes[3]!, bytes[4]!]
  const fields: Array<string> = []
  let offset = 5
  for (const length of lengths) {
    if (offset + length > bytes.length) {
      return Either.left(new MalformedMessage({ reason: "binary header is longer than the frame" }))
    }
    try {
      fields.push(decoder.decode(bytes.subarray(offset, offset + length)))
    } catch {
      return Either.left(new MalformedMessage({ reason: "binary header is not UTF-8" }))
    }
    offset += length
  }
  const [joinRef, ref, topic, event] = fields as [string, string, string, string]
  return Either.right({
    joinRef: joinRef === "" ? null : joinRef,
    ref: ref === "" ? null : ref,
    topic,
    event,
    payload: bytes.slice(offset)
  })
}

const encodeBinary = (
  kind: number,
  fields: ReadonlyArray<string>,
  data: Uint8Array
): Either.Either<Frame, UnencodableMessage> => {
  const encoded = fields.map((field) => encoder.encode(field))
  let size = 1 + encoded.length + data.length
  for (const field of encoded) {
    if (field.length > 255) {
      return Either.left(new UnencodableMessage({ reason: "a binary header field is longer than 255 bytes" }))
    }
    size += field.length
  }
  const frame = new Uint8Array(size)
  frame[0] = kind
  let offset = 1
  for (const field of encoded) frame[offset++] = field.length
  for (const field of encoded) {
    frame.set(field, offset)
    offset += field.length
  }
  frame.set(data, offset)
  return Either.right(frame)
}

/**
 * The V2 serializer: JSON arrays `[join_ref, ref, topic, event, payload]` in
 * text frames, and binary frames for binary payloads.
 *
 * @since 0.1.0
 * @category serializers
 */
export const v2 = (limits: Limits = {}): Serializer => {
  const maxDepth = limits.maxNestingDepth ?? defaultMaxNestingDepth
  return {
    vsn: "2.0.0",
    decode(frame) {
      if (typeof frame !== "string") return decodeBinary(frame)
      return Either.flatMap(parseFrame(frame, maxDepth), (json) => {
        if (!Array.isArray(json) || json.length !== 5) {
          return Either.left(new MalformedMessage({ reason: "expected [join_ref, ref, topic, event, payload]" }))
        }
        const [joinRef, ref, topic, event, payload] = json as [unknown, unknown, unknown, unknown, unknown]
        if (typeof topic !== "string" || typeof event !== "string") {
          return Either.left(new MalformedMessage({ reason: "topic and event must be strings" }))
        }
        if (!isRef(joinRef) || !isRef(ref)) {
          return Either.left(new MalformedMessage({ reason: "join_ref and ref must be strings or null" }))
        }
        return Either.right({ joinRef, ref, topic, event, payload })
      })
    },
    encode(message) {
      switch (message._tag) {
        case "Push":
          return isBinary(message.payload)
            ? encodeBinary(PUSH, [message.joinRef ?? "", message.topic, message.event], message.payload)
            : stringify([message.joinRef, message.ref, message.topic, message.event, message.payload])
        case "Reply":
          return isBinary(message.response)
            ? encodeBinary(
              REPLY,
              [message.joinRef ?? "", message.ref ?? "", message.topic, message.status],
              message.response
            )
            : stringify([
              message.joinRef,
              message.ref,
              message.topic,
              Events.reply,
              replyPayload(message.status, message.response)
            ])
        case "Broadcast":
          return isBinary(message.payload)
            ? encodeBinary(BROADCAST, [message.topic, message.event], message.payload)
            : stringify([null, null, message.topic, message.event, message.payload])
      }
    }
  }
}

/**
 * The V2 serializer with the default limits.
 *
 * @since 0.1.0
 * @category serializers
 */
export const V2: Serializer = v2()

/** The serializers of each nesting limit a socket asked for, made once: connections share them. */
const byDepth = new Map<number, readonly [Serializer, Serializer]>([[defaultMaxNestingDepth, [V1, V2]]])

/**
 * The serializer for a `vsn` query parameter, as Phoenix picks it: none or
 * `1.x` is V1, `2.x` is V2, anything else is none (the connection is refused).
 * With the default limits, it is {@link V1} or {@link V2} itself; the
 * serializers of other limits are made once, and shared.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromVsn = (vsn: string | undefined, limits?: Limits): Option.Option<Serializer> => {
  const major = vsn === undefined ? "1" : vsn.split(".")[0]
  if (major !== "1" && major !== "2") return Option.none()
  const depth = limits?.maxNestingDepth ?? defaultMaxNestingDepth
  let serializers = byDepth.get(depth)
  if (serializers === undefined) {
    serializers = [v1({ maxNestingDepth: depth }), v2({ maxNestingDepth: depth })]
    byDepth.set(depth, serializers)
  }
  return Option.some(serializers[major === "1" ? 0 : 1])
}
