/**
 * The format of a broadcast between nodes. One Redis message is one
 * broadcast, in binary so that a binary payload travels byte for byte:
 *
 *   u8  version: 1, or 2 for a broadcast with its position
 *   u8  flags: 1 = the payload is binary, 2 = an `except` connection follows
 *   u8  length of the origin node id, then its UTF-8 bytes
 *   [version 2: u8 length of the position, then `epoch:offset` in ASCII]
 *   u32 length of the topic, then its UTF-8 bytes
 *   u32 length of the event, then its UTF-8 bytes
 *   [u32 length of `except`, then its UTF-8 bytes]
 *   the payload, to the end: its bytes, or its JSON in UTF-8
 *
 * A node that reads a version it does not know drops the message and counts
 * it: nodes of two versions can run side by side during a deploy, each
 * delivering what it understands. Version 2 is what Redis publishes for a
 * topic with a history: the script that gives a broadcast its position
 * (see `history.ts`) turns the version 1 frame a node sent into version 2,
 * so that a node that predates histories refuses it instead of misreading it.
 */
import { Broker, ChannelHistory, Message } from "@effect-channels/core"

/** @internal */
export const version = 1

/** The version of a frame that carries its position. @internal */
export const positionedVersion = 2

const binaryFlag = 1
const exceptFlag = 2

/** @internal */
export class Unencodable extends Error {}

/** @internal */
export interface Decoded {
  readonly node: string
  readonly envelope: Broker.Envelope
}

/**
 * Encodes a broadcast sent by `node`, as version 1 (a position is Redis's
 * to add). Throws `Unencodable` for a payload that JSON cannot carry (a `BigInt`, a
 * cycle), which no client could read either.
 */
export const encode = (node: string, envelope: Broker.Envelope): Buffer => {
  const { event, payload, topic } = envelope.message
  const binary = Message.isBinary(payload)
  let body: Buffer
  if (binary) {
    body = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  } else {
    let json: string | undefined
    try {
      json = JSON.stringify(payload)
    } catch (cause) {
      throw new Unencodable(`payload is not JSON: ${String(cause)}`)
    }
    // `undefined` is what a serializer writes as `null` inside its array.
    body = Buffer.from(json ?? "null", "utf8")
  }
  const nodeLength = Buffer.byteLength(node, "utf8")
  const topicLength = Buffer.byteLength(topic, "utf8")
  const eventLength = Buffer.byteLength(event, "utf8")
  const except = envelope.except
  const exceptLength = except === undefined ? 0 : Buffer.byteLength(except, "utf8")
  const size = 3 + nodeLength + 4 + topicLength + 4 + eventLength + (except === undefined ? 0 : 4 + exceptLength) +
    body.byteLength
  const frame = Buffer.allocUnsafe(size)
  frame[0] = version
  frame[1] = (binary ? binaryFlag : 0) | (except === undefined ? 0 : exceptFlag)
  frame[2] = nodeLength
  let offset = 3
  offset += frame.write(node, offset, "utf8")
  offset = frame.writeUInt32BE(topicLength, offset)
  offset += frame.write(topic, offset, "utf8")
  offset = frame.writeUInt32BE(eventLength, offset)
  offset += frame.write(event, offset, "utf8")
  if (except !== undefined) {
    offset = frame.writeUInt32BE(exceptLength, offset)
    offset += frame.write(except, offset, "utf8")
  }
  body.copy(frame, offset)
  return frame
}

/**
 * Decodes a frame: the broadcast and its origin node, or a reason it cannot
 * be read; `undefined` for a frame from `self` without a position, whose
 * payload is not parsed (Redis sends a node its own broadcasts back, which
 * it delivered already). A node delivers its own broadcasts with a position
 * only as Redis sends them back, in the order of their positions.
 */
export const decode = (frame: Buffer, self: string | undefined): Decoded | string | undefined => {
  if (frame.byteLength < 3) return "truncated frame"
  if (frame[0] !== version && frame[0] !== positionedVersion) return `unknown version ${frame[0]}`
  const flags = frame[1]!
  let offset = 3
  const text = (length: number): string | undefined => {
    if (offset + length > frame.byteLength) return undefined
    const value = frame.toString("utf8", offset, offset + length)
    offset += length
    return value
  }
  const sized = (): string | undefined => {
    if (offset + 4 > frame.byteLength) return undefined
    const length = frame.readUInt32BE(offset)
    offset += 4
    return text(length)
  }
  const node = text(frame[2]!)
  let position: ChannelHistory.Position | undefined
  if (frame[0] === positionedVersion) {
    if (offset >= frame.byteLength) return "truncated frame"
    position = ChannelHistory.parse(text(frame[offset++]!))
    if (position === undefined) return "unreadable position"
  } else if (node === self) {
    return undefined
  }
  const topic = sized()
  const event = sized()
  const except = (flags & exceptFlag) === 0 ? undefined : sized()
  if (node === undefined || topic === undefined || event === undefined || ((flags & exceptFlag) !== 0 && except === undefined)) {
    return "truncated frame"
  }
  let payload: unknown
  if ((flags & binaryFlag) !== 0) {
    // A copy: the client library may reuse the buffer it read into.
    payload = new Uint8Array(frame.subarray(offset))
  } else {
    try {
      payload = JSON.parse(frame.toString("utf8", offset))
    } catch {
      return "payload is not JSON"
    }
  }
  return { node, envelope: new Broker.Envelope(Message.broadcast(topic, event, payload), except, position) }
}
