import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Socket } from "phoenix"
import WebSocket from "ws"
import { startServer } from "./utils/server.js"

describe("smoke", () => {
  it.scopedLive("the phoenix client joins and gets a broadcast", () =>
    Effect.gen(function*() {
      const server = yield* startServer(ChannelHandler.layer({
        join: (conn) => Effect.succeed(conn.allowJoin({ hello: "world" })),
        incoming: (conn, event) => conn.broadcast(event.event, event.payload)
      }))
      const socket = new Socket(server.socketUrl, { transport: WebSocket })
      socket.connect()
      yield* Effect.addFinalizer(() => Effect.sync(() => socket.disconnect()))
      const channel = socket.channel("room:1", {})
      const reply = yield* Effect.async<unknown>((resume) => {
        channel.join().receive("ok", (response: unknown) => resume(Effect.succeed(response)))
      })
      expect(reply).toEqual({ hello: "world" })
      const received = yield* Effect.async<unknown>((resume) => {
        channel.on("shout", (payload: unknown) => resume(Effect.succeed(payload)))
        channel.push("shout", { n: 1 })
      })
      expect(received).toEqual({ n: 1 })
    }))
})
