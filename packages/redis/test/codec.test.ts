/**
 * The format between nodes, on its own: what goes in comes out, and what a
 * node cannot read is refused with a reason rather than misread.
 */
import { Broker, Message } from "@effect-channels/core"
import { describe, expect, it } from "vitest"
import * as Codec from "../src/internal/codec.js"

const envelope = (payload: unknown, except?: string) =>
  new Broker.Envelope(Message.broadcast("rooms:été ✓", "new:msg", payload), except)

/** A version 1 frame made version 2 with a position after the node id, as the history script does in Lua. */
const positioned = (frame: Buffer, position: string) => {
  const head = 3 + frame[2]!
  return Buffer.concat([
    Buffer.from([Codec.positionedVersion]),
    frame.subarray(1, head),
    Buffer.from([position.length]),
    Buffer.from(position, "latin1"),
    frame.subarray(head)
  ])
}

describe("the format between nodes", () => {
  it("carries topic, event, JSON payload and except, with the origin node", () => {
    const frame = Codec.encode("node-1", envelope({ body: "héllo", n: [1, null, true] }, "abc.42"))
    expect(frame[0]).toBe(Codec.version)
    const decoded = Codec.decode(frame, "node-2")
    if (decoded === undefined || typeof decoded === "string") return expect.fail(String(decoded))
    expect(decoded.node).toBe("node-1")
    expect(decoded.envelope.except).toBe("abc.42")
    expect(decoded.envelope.message).toEqual(Message.broadcast("rooms:été ✓", "new:msg", { body: "héllo", n: [1, null, true] }))
  })

  it("carries a binary payload byte for byte, from a view into a larger buffer", () => {
    const backing = Uint8Array.from({ length: 300 }, (_, i) => 255 - (i % 256))
    const view = backing.subarray(10, 266)
    const decoded = Codec.decode(Codec.encode("n", envelope(view)), "other")
    if (decoded === undefined || typeof decoded === "string") return expect.fail(String(decoded))
    expect(decoded.envelope.message.payload).toBeInstanceOf(Uint8Array)
    expect(Array.from(decoded.envelope.message.payload as Uint8Array)).toEqual(Array.from(view))
    expect(decoded.envelope.except).toBeUndefined()
  })

  it("skips a node's own frames, refuses other versions and truncated frames", () => {
    const frame = Codec.encode("self", envelope({}))
    expect(Codec.decode(frame, "self")).toBeUndefined()
    const otherVersion = Buffer.from(frame)
    otherVersion[0] = 3
    expect(Codec.decode(otherVersion, "x")).toBe("unknown version 3")
    expect(Codec.decode(frame.subarray(0, 12), "x")).toBe("truncated frame")
    expect(Codec.decode(Buffer.alloc(0), "x")).toBe("truncated frame")
  })

  it("carries a position in version 2, and decodes a node's own positioned frames", () => {
    const position = { epoch: "Zx_9-a", offset: 123456789 }
    const frame = positioned(Codec.encode("self", envelope({ n: 1 }, "abc.1")), "Zx_9-a:123456789")
    const decoded = Codec.decode(frame, "self")
    if (decoded === undefined || typeof decoded === "string") return expect.fail(String(decoded))
    expect(decoded.envelope.position).toEqual(position)
    expect(decoded.envelope.except).toBe("abc.1")
    expect(decoded.envelope.message).toEqual(Message.broadcast("rooms:été ✓", "new:msg", { n: 1 }))
    const bad = Buffer.from(frame)
    // The offset's last digit.
    bad[3 + "self".length + "Zx_9-a:123456789".length] = "x".charCodeAt(0)
    expect(Codec.decode(bad, "x")).toBe("unreadable position")
  })

  it("refuses a payload JSON cannot carry, and writes undefined as null", () => {
    expect(() => Codec.encode("n", envelope({ big: 1n }))).toThrow(Codec.Unencodable)
    const decoded = Codec.decode(Codec.encode("n", envelope(undefined)), "x")
    if (decoded === undefined || typeof decoded === "string") return expect.fail(String(decoded))
    expect(decoded.envelope.message.payload).toBeNull()
  })
})
