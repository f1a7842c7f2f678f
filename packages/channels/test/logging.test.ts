/**
 * Parameter filtering for logs, as Phoenix's `filter_values`, and the log
 * levels a socket's `logLevel` option resolves to.
 */
import { describe, expect, it } from "@effect/vitest"
import * as LogLevel from "effect/LogLevel"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import { filterParams, formatDuration, logAbove, resolveLogLevels } from "../src/internal/logging.js"

describe("filterParams", () => {
  it("hides the value of every key containing a filtered string, at any depth, in arrays too", () => {
    expect(filterParams({
      user: "ada",
      password: "x",
      password_confirmation: "y",
      nested: { old_password: "z", list: [{ password: 1, ok: 2 }] }
    }, ["password"])).toEqual({
      user: "ada",
      password: "[FILTERED]",
      password_confirmation: "[FILTERED]",
      nested: { old_password: "[FILTERED]", list: [{ password: "[FILTERED]", ok: 2 }] }
    })
  })

  it("takes a configurable list, and leaves scalars, null and the input alone", () => {
    const input = { token: "t", secret: "s", password: "p" }
    expect(filterParams(input, ["token", "secret"])).toEqual({ token: "[FILTERED]", secret: "[FILTERED]", password: "p" })
    expect(input).toEqual({ token: "t", secret: "s", password: "p" })
    expect(filterParams("text", ["password"])).toBe("text")
    expect(filterParams(null, ["password"])).toBe(null)
    expect(filterParams({ password: "p" }, [])).toEqual({ password: "p" })
  })

  it("with { keep }, shows only the values of the keys listed", () => {
    expect(filterParams({ id: 1, name: "ada", card: { number: "4242", id: 7 }, tags: ["a"] }, { keep: ["id", "name"] }))
      .toEqual({ id: 1, name: "ada", card: { number: "[FILTERED]", id: 7 }, tags: ["[FILTERED]"] })
  })

  it("shows a binary payload by its size only", () => {
    expect(filterParams(new Uint8Array([1, 2, 3]), ["password"])).toBe("<binary, 3 bytes>")
  })
})

describe("resolveLogLevels", () => {
  it("Phoenix's defaults: connect and join at Info, events at Debug", () => {
    expect(resolveLogLevels(undefined)).toEqual({ connect: LogLevel.Info, join: LogLevel.Info, event: LogLevel.Debug })
  })

  it("a level sets connect and join; false turns everything off; an object sets each kind", () => {
    expect(resolveLogLevels("Warning")).toEqual({ connect: LogLevel.Warning, join: LogLevel.Warning, event: LogLevel.Debug })
    expect(resolveLogLevels(false)).toEqual({ connect: undefined, join: undefined, event: undefined })
    expect(resolveLogLevels({ join: false, event: "Info" })).toEqual({ connect: LogLevel.Info, join: undefined, event: LogLevel.Info })
  })
})

describe("formatDuration", () => {
  it("prints as Phoenix does, for connect, join and event logs alike: µs up to a millisecond, then ms", () => {
    expect(formatDuration(0.065)).toBe("65µs")
    expect(formatDuration(1)).toBe("1000µs")
    expect(formatDuration(1.2)).toBe("1ms")
    expect(formatDuration(12.6)).toBe("13ms")
  })
})

describe("logAbove", () => {
  it.effect("makes the log only at a level the fiber's minimum lets through", () =>
    Effect.gen(function*() {
      const made: Array<string> = []
      const log = (name: string) => () => Effect.sync(() => void made.push(name))
      yield* logAbove(LogLevel.Info, log("info under Warning")).pipe(Logger.withMinimumLogLevel(LogLevel.Warning))
      yield* logAbove(LogLevel.Info, log("info under Info")).pipe(Logger.withMinimumLogLevel(LogLevel.Info))
      yield* logAbove(LogLevel.Error, log("error under Warning")).pipe(Logger.withMinimumLogLevel(LogLevel.Warning))
      expect(made).toEqual(["info under Info", "error under Warning"])
    }))
})
