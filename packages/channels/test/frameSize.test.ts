/**
 * The size of a frame, as the size limits and the byte metrics count it.
 */
import { describe, expect, it } from "@effect/vitest"
import * as fc from "fast-check"
import { byteLength, overLimit } from "../src/internal/frameSize.js"

const utf8 = new TextEncoder()

describe("frame sizes", () => {
  it("a text frame's size is its UTF-8 length, ASCII or not", () => {
    for (const text of ["", "[\"1\",\"1\",\"rooms:lobby\",\"ping\",{}]", "é", "€ and ü", "😀", "a😀b€c"]) {
      expect(byteLength(text)).toBe(utf8.encode(text).length)
    }
    fc.assert(fc.property(fc.string({ unit: "grapheme" }), (text) => byteLength(text) === utf8.encode(text).length))
  })

  it("a binary frame's size is its byte length", () => {
    expect(byteLength(new Uint8Array(7))).toBe(7)
  })

  it("a frame over the limit in UTF-8 bytes is over it, though its string length is not", () => {
    expect(overLimit("€€€", 8)).toBe(true)
    expect(overLimit("€€€", 9)).toBe(false)
    expect(overLimit("abc", 3)).toBe(false)
  })
})
