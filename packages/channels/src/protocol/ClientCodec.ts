/**
 * The client side of the V2 protocol, as the official JS client speaks it:
 * encodes what a client sends and decodes what a server writes. The server
 * never uses it; `ChannelTest` and tests do, to drive the real runtime
 * through real frames.
 *
 * @since 0.1.0
 */
import * as Either from "effect/Either"
import type { Frame, Message, Outbound } from "./Message.js"
import * as Msg from "./Message.js"
import { MalformedMessage } from "./Serializer.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/**
 * Encodes a client message: a JSON array, or a binary push (kind 0) for a
 * binary payload.
 *
 * @since 0.1.0
 * @category encoding
 */
export const encode = (message: Message): Frame => {
  if (!Msg.isBinary(message.payload)) {
    return JSON.stringify([message.joinRef, message.ref, message.topic, message.event, message.payload])
  }
  const fields = [message.joinRef ?? "", message.ref ?? "", message.topic, message.event].map((field) =>
    encoder.encode(field)
  )
  const header = 1 + fields.length + fields.reduce((size, field) => size + field.length, 0)
  const frame = new Uint8Array(header + message.payload.length)
  frame[0] = 0
  let offset = 1
  for (const field of fields) frame[offset++] = field.length
  for (const field of fields) {
    frame.set(field, offset)
    offset += field.length
  }
  frame.set(message.payload, offset)
  return frame
}

const readFields = (bytes: Uint8Array, count: number, start: number) => {
  const fields: Array<string> = []
  let offset = start + count
  for (let i = 0; i < count; i++) {
    const length = bytes[start + i]!
    fields.push(decoder.decode(bytes.subarray(offset, offset + length)))
    offset += length
  }
  return offset > bytes.length ? undefined : { fields, data: bytes.slice(offset) }
}

const decodeBinary = (bytes: Uint8Array): Either.Either<Outbound, MalformedMessage> => {
  const kind = bytes[0]
  const read = kind === 0 ? readFields(bytes, 3, 1) : kind === 1 ? readFields(bytes, 4, 1) : kind === 2 ? readFields(bytes, 2, 1) : undefined
  if (read === undefined) return Either.left(new MalformedMessage({ reason: "not a server binary frame" }))
  const { data, fields } = read
  const orNull = (field: string) => (field === "" ? null : field)
  switch (kind) {
    case 0:
      return Either.right(Msg.push(orNull(fields[0]!), fields[1]!, fields[2]!, data))
    case 1:
      return Either.right(
        Msg.reply(orNull(fields[0]!), orNull(fields[1]!), fields[2]!, fields[3] === "ok" ? "ok" : "error", data)
      )
    default:
      return Either.right(Msg.broadcast(fields[0]!, fields[1]!, data))
  }
}

/**
 * Decodes a frame written by a server into a push, a reply or a broadcast.
 *
 * @since 0.1.0
 * @category decoding
 */
export const decode = (frame: Frame): Either.Either<Outbound, MalformedMessage> => {
  if (typeof frame !== "string") return decodeBinary(frame)
  let json: unknown
  try {
    json = JSON.parse(frame)
  } catch {
    return Either.left(new MalformedMessage({ reason: "invalid JSON" }))
  }
  if (!Array.isArray(json) || json.length !== 5) {
    return Either.left(new MalformedMessage({ reason: "expected [join_ref, ref, topic, event, payload]" }))
  }
  const [joinRef, ref, topic, event, payload] = json as [string | null, string | null, string, string, unknown]
  if (event === Msg.Events.reply) {
    const { response, status } = payload as { readonly status: "ok" | "error"; readonly response: unknown }
    return Either.right(Msg.reply(joinRef, ref, topic, status, response))
  }
  if (joinRef === null && ref === null) return Either.right(Msg.broadcast(topic, event, payload))
  return Either.right(Msg.push(joinRef, topic, event, payload, ref))
}
