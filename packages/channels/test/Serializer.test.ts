/**
 * The serializers, both directions, against PROTOCOL.md and against the
 * official client's own serializer.
 */
import { ClientCodec, Message, Serializer } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import fc from "fast-check"
// @ts-expect-error The client's serializer ships as JavaScript without types.
import ClientSerializer from "../node_modules/phoenix/assets/js/phoenix/serializer.js"

interface ClientMessage {
  join_ref: string | null
  ref: string | null
  topic: string
  event: string
  payload: unknown
}

/** What the official client writes for a message (binary payloads as ArrayBuffer). */
const encodeWithClient = (message: ClientMessage) =>
  new Promise<string | Uint8Array>((resolve) =>
    ClientSerializer.encode(message, (encoded: string | ArrayBuffer) =>
      resolve(typeof encoded === "string" ? encoded : new Uint8Array(encoded)))
  )

/** What the official client reads from a frame. */
const decodeWithClient = (frame: string | Uint8Array) =>
  new Promise<ClientMessage>((resolve) => {
    const raw = typeof frame === "string"
      ? frame
      : frame.buffer.slice(frame.byteOffset, frame.byteOffset + frame.byteLength)
    ClientSerializer.decode(raw, resolve)
  })

const right = <A, E>(either: Either.Either<A, E>): A => {
  if (Either.isLeft(either)) throw new Error(`expected Right, got ${String(either.left)}`)
  return either.right
}

const bytes = (...values: Array<number | string>) =>
  new Uint8Array(values.flatMap((value) => typeof value === "string" ? [...new TextEncoder().encode(value)] : [value]))

const ref = fc.oneof(fc.constant(null), fc.string({ minLength: 1, maxLength: 20 }))
const name = fc.string({ minLength: 1, maxLength: 40 })
const json = fc.jsonValue().map((value) => JSON.parse(JSON.stringify(value)) as unknown)
/** The client reads `payload.constructor`: it never sends a null payload. */
const clientPayload = json.filter((value) => value !== null)
const binary = fc.uint8Array({ maxLength: 300 })

describe("V2 text", () => {
  it("decodes [join_ref, ref, topic, event, payload]", () => {
    expect(right(Serializer.V2.decode(`["1","2","room:1","new:msg",{"body":"hi"}]`))).toEqual({
      joinRef: "1",
      ref: "2",
      topic: "room:1",
      event: "new:msg",
      payload: { body: "hi" }
    })
  })

  it("encodes pushes, replies, broadcasts and phx_close as PROTOCOL.md says", () => {
    expect(right(Serializer.V2.encode(Message.push("1", "room:1", "ev", { a: 1 })))).toBe(`["1",null,"room:1","ev",{"a":1}]`)
    expect(right(Serializer.V2.encode(Message.reply("1", "2", "room:1", "ok", { a: 1 })))).toBe(
      `["1","2","room:1","phx_reply",{"status":"ok","response":{"a":1}}]`
    )
    expect(right(Serializer.V2.encode(Message.broadcast("room:1", "ev", { a: 1 })))).toBe(`[null,null,"room:1","ev",{"a":1}]`)
    expect(right(Serializer.V2.encode(Message.push("1", "room:1", "phx_close", {}, "1")))).toBe(`["1","1","room:1","phx_close",{}]`)
  })

  it("property: what the official client encodes, we decode", async () => {
    await fc.assert(fc.asyncProperty(ref, ref, name, name, clientPayload, async (join_ref, ref, topic, event, payload) => {
      const frame = await encodeWithClient({ join_ref, ref, topic, event, payload })
      expect(right(Serializer.V2.decode(frame))).toEqual({ joinRef: join_ref, ref, topic, event, payload })
    }))
  })

  it("property: what we encode, the official client decodes", async () => {
    await fc.assert(fc.asyncProperty(ref, ref, name, name, json, async (joinRef, replyRef, topic, event, payload) => {
      expect(await decodeWithClient(right(Serializer.V2.encode(Message.push(joinRef, topic, event, payload))))).toEqual({
        join_ref: joinRef,
        ref: null,
        topic,
        event,
        payload
      })
      expect(await decodeWithClient(right(Serializer.V2.encode(Message.reply(joinRef, replyRef, topic, "error", payload)))))
        .toEqual({ join_ref: joinRef, ref: replyRef, topic, event: "phx_reply", payload: { status: "error", response: payload } })
      expect(await decodeWithClient(right(Serializer.V2.encode(Message.broadcast(topic, event, payload))))).toEqual({
        join_ref: null,
        ref: null,
        topic,
        event,
        payload
      })
    }))
  })
})

describe("V2 binary", () => {
  it("decodes a client push, kind 0", () => {
    expect(right(Serializer.V2.decode(bytes(0, 1, 1, 6, 3, "1", "2", "room:1", "evt", 9, 8, 7)))).toEqual({
      joinRef: "1",
      ref: "2",
      topic: "room:1",
      event: "evt",
      payload: new Uint8Array([9, 8, 7])
    })
  })

  it("encodes push kind 0, reply kind 1, broadcast kind 2 with one-byte lengths", () => {
    const data = new Uint8Array([9, 8])
    expect(right(Serializer.V2.encode(Message.push("1", "room:1", "evt", data)))).toEqual(bytes(0, 1, 6, 3, "1", "room:1", "evt", 9, 8))
    expect(right(Serializer.V2.encode(Message.reply("1", "2", "room:1", "ok", data)))).toEqual(
      bytes(1, 1, 1, 6, 2, "1", "2", "room:1", "ok", 9, 8)
    )
    expect(right(Serializer.V2.encode(Message.broadcast("room:1", "evt", data)))).toEqual(bytes(2, 6, 3, "room:1", "evt", 9, 8))
  })

  const short = fc.string({ minLength: 1, maxLength: 20 })

  it("property: the official client's binary pushes decode; ours decode in the client", async () => {
    await fc.assert(fc.asyncProperty(short, short, short, short, binary, async (join_ref, ref, topic, event, data) => {
      const frame = await encodeWithClient({ join_ref, ref, topic, event, payload: data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) })
      expect(right(Serializer.V2.decode(frame))).toEqual({ joinRef: join_ref, ref, topic, event, payload: data })
      const push = await decodeWithClient(right(Serializer.V2.encode(Message.push(join_ref, topic, event, data))))
      expect({ ...push, payload: new Uint8Array(push.payload as ArrayBuffer) }).toEqual({ join_ref, ref: null, topic, event, payload: data })
      const reply = await decodeWithClient(right(Serializer.V2.encode(Message.reply(join_ref, ref, topic, "ok", data))))
      const response = (reply.payload as { response: ArrayBuffer }).response
      expect(reply.ref).toBe(ref)
      expect(new Uint8Array(response)).toEqual(data)
      const broadcast = await decodeWithClient(right(Serializer.V2.encode(Message.broadcast(topic, event, data))))
      expect(new Uint8Array(broadcast.payload as ArrayBuffer)).toEqual(data)
    }))
  })

  it("a header field over 255 bytes is an UnencodableMessage", () => {
    const result = Serializer.V2.encode(Message.broadcast("x".repeat(256), "evt", new Uint8Array([1])))
    expect(Either.isLeft(result) && result.left._tag).toBe("UnencodableMessage")
  })
})

describe("V1", () => {
  it("decodes objects, join_ref optional; encodes without join_ref", () => {
    expect(right(Serializer.V1.decode(`{"topic":"t","event":"e","payload":{},"ref":"1"}`))).toEqual({
      joinRef: null,
      ref: "1",
      topic: "t",
      event: "e",
      payload: {}
    })
    expect(JSON.parse(right(Serializer.V1.encode(Message.reply("9", "1", "t", "ok", { a: 1 }))) as string)).toEqual({
      topic: "t",
      event: "phx_reply",
      payload: { status: "ok", response: { a: 1 } },
      ref: "1"
    })
    expect(JSON.parse(right(Serializer.V1.encode(Message.broadcast("t", "e", [1]))) as string)).toEqual({
      topic: "t",
      event: "e",
      payload: [1],
      ref: null
    })
  })

  it("property: encode then decode round-trips pushes", () => {
    fc.assert(fc.property(ref, name, name, json, (replyRef, topic, event, payload) => {
      const frame = right(Serializer.V1.encode(Message.push(null, topic, event, payload, replyRef)))
      expect(right(Serializer.V1.decode(frame))).toEqual({ joinRef: null, ref: replyRef, topic, event, payload })
    }))
  })

  it("binary payloads and binary frames are refused with typed errors", () => {
    const encoded = Serializer.V1.encode(Message.broadcast("t", "e", new Uint8Array([1])))
    expect(Either.isLeft(encoded) && encoded.left._tag).toBe("UnencodableMessage")
    const decoded = Serializer.V1.decode(new Uint8Array([0, 1]))
    expect(Either.isLeft(decoded) && decoded.left._tag).toBe("MalformedMessage")
  })
})

describe("malformed input", () => {
  const wellFormed = (message: Message.Message) =>
    typeof message.topic === "string" && typeof message.event === "string" &&
    (message.ref === null || typeof message.ref === "string") &&
    (message.joinRef === null || typeof message.joinRef === "string")

  it("property: decoding arbitrary text or bytes never throws: a MalformedMessage or a well-formed message", () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.json(), fc.uint8Array({ maxLength: 64 })), (frame) => {
      for (const serializer of [Serializer.V1, Serializer.V2]) {
        const result = serializer.decode(frame)
        if (Either.isLeft(result)) expect(result.left._tag).toBe("MalformedMessage")
        else expect(wellFormed(result.right)).toBe(true)
      }
    }), { numRuns: 500 })
  })

  it("names what is wrong", () => {
    const reason = (frame: string | Uint8Array) => {
      const result = Serializer.V2.decode(frame)
      return Either.isLeft(result) ? result.left.reason : undefined
    }
    expect(reason("{not json")).toBe("invalid JSON")
    expect(reason(`["1","2","t","e"]`)).toBe("expected [join_ref, ref, topic, event, payload]")
    expect(reason(`["1","2",3,"e",{}]`)).toBe("topic and event must be strings")
    expect(reason(`[1,"2","t","e",{}]`)).toBe("join_ref and ref must be strings or null")
    expect(reason(bytes(0, 1, 1, 40, 3, "1", "2"))).toBe("binary header is longer than the frame")
    expect(reason(bytes(2, 1, 1, "t", "e"))).toBe("binary frames from clients must be pushes (kind 0)")
  })
})

describe("fromVsn", () => {
  it("picks V1 for none or 1.x, V2 for 2.x, none for anything else", () => {
    expect(Option.map(Serializer.fromVsn(undefined), (s) => s.vsn)).toEqual(Option.some("1.0.0"))
    expect(Option.map(Serializer.fromVsn("1.0.0"), (s) => s.vsn)).toEqual(Option.some("1.0.0"))
    expect(Option.map(Serializer.fromVsn("2.0.0"), (s) => s.vsn)).toEqual(Option.some("2.0.0"))
    expect(Serializer.fromVsn("3.0.0")).toEqual(Option.none())
  })
})

describe("ClientCodec", () => {
  it("property: what the client side encodes, the server decodes, and back", () => {
    fc.assert(fc.property(ref, ref, name, name, fc.oneof(json, binary), (joinRef, ref, topic, event, payload) => {
      const message = { joinRef, ref, topic, event, payload }
      expect(right(Serializer.V2.decode(ClientCodec.encode(message)))).toEqual(message)
      const reply = Message.reply(joinRef, ref, topic, "ok", payload)
      expect(right(ClientCodec.decode(right(Serializer.V2.encode(reply))))).toEqual(reply)
    }))
  })
})

/** A value nesting `depth` arrays, the innermost holding 1. */
const nested = (depth: number) => "[".repeat(depth) + "1" + "]".repeat(depth)
/** A value nesting `depth` objects: {"a":{"a":...{}}}. */
const nestedObjects = (depth: number) => `{"a":`.repeat(depth - 1) + "{}" + "}".repeat(depth - 1)

describe("nesting depth", () => {
  const reason = (serializer: Serializer.Serializer, frame: string) => {
    const result = serializer.decode(frame)
    return Either.isLeft(result) ? result.left.reason : undefined
  }
  const v2 = (payload: string) => `["1","2","room:1","e",${payload}]`
  const v1 = (payload: string) => `{"topic":"room:1","event":"e","ref":"2","payload":${payload}}`

  it("a payload at the default limit (64) is decoded, one level deeper is malformed, in V1 and V2", () => {
    expect(Serializer.defaultMaxNestingDepth).toBe(64)
    for (const [serializer, frame] of [[Serializer.V2, v2], [Serializer.V1, v1]] as const) {
      expect(reason(serializer, frame(nested(64)))).toBeUndefined()
      expect(reason(serializer, frame(nestedObjects(64)))).toBeUndefined()
      expect(reason(serializer, frame(nested(65)))).toBe("payload nested deeper than 64")
      expect(reason(serializer, frame(nestedObjects(65)))).toBe("payload nested deeper than 64")
    }
  })

  it("the depth that counts is the deepest branch, among many shallow containers", () => {
    const wide = `[${Array.from({ length: 200 }, () => `{"x":[1]}`).join(",")}]`
    expect(reason(Serializer.V2, v2(wide))).toBeUndefined()
    expect(reason(Serializer.V2, v2(`[${wide},${nested(64)}]`))).toBe("payload nested deeper than 64")
    // Brackets inside strings are not containers.
    expect(reason(Serializer.V2, v2(JSON.stringify({ text: "[".repeat(500) })))).toBeUndefined()
  })

  it("100,000 nested arrays are refused, without overflowing the stack", () => {
    expect(reason(Serializer.V2, v2(nested(100_000)))).toBe("payload nested deeper than 64")
    expect(reason(Serializer.V1, v1(nested(100_000)))).toBe("payload nested deeper than 64")
  })

  it("the limit is an option: v2({ maxNestingDepth }) and fromVsn", () => {
    const shallow = Serializer.v2({ maxNestingDepth: 3 })
    expect(reason(shallow, v2(nested(3)))).toBeUndefined()
    expect(reason(shallow, v2(nested(4)))).toBe("payload nested deeper than 3")
    const fromVsn = Option.getOrThrow(Serializer.fromVsn("1.0.0", { maxNestingDepth: 3 }))
    expect(reason(fromVsn, v1(nested(4)))).toBe("payload nested deeper than 3")
    // The defaults give the shared serializers; another limit gives the same one each time.
    expect(Option.getOrThrow(Serializer.fromVsn("2.0.0", {}))).toBe(Serializer.V2)
    expect(Option.getOrThrow(Serializer.fromVsn("2.0.0", { maxNestingDepth: 3 }))).toBe(
      Option.getOrThrow(Serializer.fromVsn("2.1.0", { maxNestingDepth: 3 }))
    )
  })
})

describe("encoding never throws", () => {
  const cyclic: Record<string, unknown> = {}
  cyclic["self"] = cyclic
  let deep: unknown = 1
  for (let i = 0; i < 1_000_000; i++) deep = [deep]
  const unencodable = [cyclic, { n: 1n }, deep]

  it("a cycle, a BigInt or a value too deep for the stack is an UnencodableMessage, in V1 and V2", () => {
    for (const serializer of [Serializer.V1, Serializer.V2]) {
      for (const payload of unencodable) {
        for (const message of [Message.push("1", "t", "e", payload), Message.broadcast("t", "e", payload), Message.reply("1", "2", "t", "ok", payload)]) {
          const result = serializer.encode(message)
          expect(Either.isLeft(result) && result.left._tag).toBe("UnencodableMessage")
        }
      }
    }
  })

  it("what decoding accepted encodes again: a reply echoing a payload at the limit", () => {
    const payload = right(Serializer.V2.decode(`["1","2","t","e",${nested(64)}]`)).payload
    expect(Either.isRight(Serializer.V2.encode(Message.reply("1", "2", "t", "ok", payload)))).toBe(true)
    expect(Either.isRight(Serializer.V1.encode(Message.reply("1", "2", "t", "ok", payload)))).toBe(true)
  })
})
