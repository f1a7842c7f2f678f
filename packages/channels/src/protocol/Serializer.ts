/**
 * Serializers turn frames into {@link Message}s and {@link Outbound} messages
 * into frames. The `vsn` query parameter of a connection picks one: `1.x` (or
 * none) is {@link V1}, `2.x` is {@link V2}.
 *
 * - V1: JSON objects `{topic, event, payload, ref, join_ref}`, text only.
 * - V2: JSON arrays `[join_ref, ref, topic, event, payload]`, plus binary
 *   frames whose header fields are length-prefixed by one byte each.
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

const parseJson = (text: string): Either.Either<unknown, MalformedMessage> => {
  try {
    return Either.right(JSON.parse(text))
  } catch {
    return Either.left(new MalformedMessage({ reason: "invalid JSON" }))
  }
}

const replyPayload = (status: string, response: unknown) => ({ status, response })

/**
 * The V1 JSON serializer: `{"topic", "event", "payload", "ref", "join_ref"}`.
 * Outgoing messages carry no `join_ref`; binary payloads cannot be sent.
 *
 * @since 0.1.0
 * @category serializers
 */
export const V1: Serializer = {
  vsn: "1.0.0",
  decode(frame) {
    if (typeof frame !== "string") {
      return Either.left(new MalformedMessage({ reason: "V1 accepts text frames only" }))
    }
    return Either.flatMap(parseJson(frame), (json) => {
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
        return Either.right(JSON.stringify({
          topic: message.topic,
          event: Events.reply,
          payload: replyPayload(message.status, message.response),
          ref: message.ref
        }))
      case "Push":
      case "Broadcast":
        if (isBinary(message.payload)) return Either.left(v1Binary)
        return Either.right(JSON.stringify({
          topic: message.topic,
          event: message.event,
          payload: message.payload,
          ref: message._tag === "Push" ? message.ref : null
        }))
    }
  }
}

const v1Binary = new UnencodableMessage({ reason: "V1 cannot carry binary payloads" })

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
export const V2: Serializer = {
  vsn: "2.0.0",
  decode(frame) {
    if (typeof frame !== "string") return decodeBinary(frame)
    return Either.flatMap(parseJson(frame), (json) => {
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
          : Either.right(
            JSON.stringify([message.joinRef, message.ref, message.topic, message.event, message.payload])
          )
      case "Reply":
        return isBinary(message.response)
          ? encodeBinary(
            REPLY,
            [message.joinRef ?? "", message.ref ?? "", message.topic, message.status],
            message.response
          )
          : Either.right(JSON.stringify([
            message.joinRef,
            message.ref,
            message.topic,
            Events.reply,
            replyPayload(message.status, message.response)
          ]))
      case "Broadcast":
        return isBinary(message.payload)
          ? encodeBinary(BROADCAST, [message.topic, message.event], message.payload)
          : Either.right(JSON.stringify([null, null, message.topic, message.event, message.payload]))
    }
  }
}

/**
 * The serializer for a `vsn` query parameter, as Phoenix picks it: none or
 * `1.x` is V1, `2.x` is V2, anything else is none (the connection is refused).
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromVsn = (vsn: string | undefined): Option.Option<Serializer> => {
  if (vsn === undefined) return Option.some(V1)
  const major = vsn.split(".")[0]
  return major === "1" ? Option.some(V1) : major === "2" ? Option.some(V2) : Option.none()
}
