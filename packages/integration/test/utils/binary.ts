/**
 * V2 binary frames by hand (PROTOCOL.md): a client push to send, and the
 * server's pushes, replies and broadcasts taken apart.
 */
const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** A client push, kind 0: `0, jrLen, refLen, topicLen, eventLen, join_ref, ref, topic, event, data`. */
export const clientPush = (joinRef: string, ref: string, topic: string, event: string, data: ArrayLike<number>): Uint8Array => {
  const fields = [joinRef, ref, topic, event].map((field) => encoder.encode(field))
  return new Uint8Array([0, ...fields.map((field) => field.length), ...fields.flatMap((field) => Array.from(field)), ...Array.from(data)])
}

export type ServerFrame =
  | { readonly kind: "push"; readonly joinRef: string; readonly topic: string; readonly event: string; readonly data: Array<number> }
  | {
    readonly kind: "reply"
    readonly joinRef: string
    readonly ref: string
    readonly topic: string
    readonly status: string
    readonly data: Array<number>
  }
  | { readonly kind: "broadcast"; readonly topic: string; readonly event: string; readonly data: Array<number> }

/** Takes a binary frame of the server apart. */
export const decodeServerFrame = (frame: Uint8Array): ServerFrame => {
  const kind = frame[0]
  const lengths = kind === 0 ? 3 : kind === 1 ? 4 : kind === 2 ? 2 : -1
  if (lengths === -1) throw new Error(`unknown binary kind ${kind}`)
  let offset = 1 + lengths
  const fields = Array.from(frame.subarray(1, 1 + lengths), (length) => {
    const field = decoder.decode(frame.subarray(offset, offset + length))
    offset += length
    return field
  })
  const data = Array.from(frame.subarray(offset))
  const [a, b, c, d] = fields as [string, string, string, string]
  return kind === 0
    ? { kind: "push", joinRef: a, topic: b, event: c, data }
    : kind === 1
    ? { kind: "reply", joinRef: a, ref: b, topic: c, status: d, data }
    : { kind: "broadcast", topic: a, event: b, data }
}
