/**
 * What the server logs, as an operator reads it: one message per line, the
 * details under keys of their own.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as HashMap from "effect/HashMap"
import * as Logger from "effect/Logger"
import { connect, eventually } from "./utils/rawClient.js"
import { startServer, transports } from "./utils/server.js"

interface Line {
  readonly message: unknown
  readonly annotations: Record<string, unknown>
}

const capture = () => {
  const lines: Array<Line> = []
  const logger = Logger.make<unknown, void>(({ annotations, message }) => {
    lines.push({ message, annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
  })
  return { lines, layer: Logger.replace(Logger.defaultLogger, logger) }
}

/** A line's message: Effect passes one message as a one-element array. */
const messageOf = (line: Line): unknown =>
  Array.isArray(line.message) && line.message.length === 1 ? line.message[0] : line.message

const Quiet = ChannelHandler.layer({ join: (conn) => Effect.succeed(conn.allowJoin()) })

describe.each(transports)("logs (%s)", (transport) => {
  it.scopedLive("a malformed frame is logged as one message, its reason under `reason`", () => {
    const { layer, lines } = capture()
    return Effect.gen(function*() {
      const server = yield* startServer(Quiet, { transport })
      const client = yield* connect(server.socketUrl)
      yield* client.send("{not json")
      expect((yield* client.closed).code).toBe(1007)
      const found = yield* eventually(
        Effect.sync(() => lines.find((line) => messageOf(line) === "closing on a malformed frame")),
        (line) => line !== undefined
      )
      expect(typeof found!.annotations["reason"]).toBe("string")
      expect(lines.every((line) => !Array.isArray(line.message) || line.message.length === 1)).toBe(true)
    }).pipe(Effect.provide(layer))
  })
})
