/**
 * A leave or a duplicate join comes after the events its client pushed
 * before it, as in Phoenix, where they are all messages to the channel's
 * process: the channel handles those first (found by the fuzz test, which
 * lost their replies), then it ends.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { connect } from "./utils/rawClient.js"
import { startServer, transports } from "./utils/server.js"

const layer = ChannelHandler.layer({
  join: (conn) => Effect.succeed(conn.allowJoin()),
  // Slow enough that the leave or the join arrives while these are queued or running.
  incoming: (conn, event) => Effect.zipRight(Effect.sleep("30 millis"), conn.reply(event, "ok", event.payload))
})

describe.each(transports)("ordering over %s", (transport) => {
  it.scopedLive("phx_leave: the pushes before it are answered, then the leave, then phx_close", () =>
    Effect.gen(function*() {
      const server = yield* startServer(layer, { transport })
      const client = yield* connect(server.socketUrl)
      yield* client.send(["1", "1", "room:1", "phx_join", {}])
      yield* client.next((m) => m[1] === "1")
      yield* client.send(["1", "2", "room:1", "a", { n: 1 }])
      yield* client.send(["1", "3", "room:1", "b", { n: 2 }])
      yield* client.send(["1", "4", "room:1", "phx_leave", {}])
      const frames = [yield* client.next(), yield* client.next(), yield* client.next(), yield* client.next()]
      expect(frames).toEqual([
        ["1", "2", "room:1", "phx_reply", { status: "ok", response: { n: 1 } }],
        ["1", "3", "room:1", "phx_reply", { status: "ok", response: { n: 2 } }],
        ["1", "4", "room:1", "phx_reply", { status: "ok", response: {} }],
        ["1", "1", "room:1", "phx_close", {}]
      ])
    }))

  it.scopedLive("a duplicate join: the pushes before it are answered by the old channel, then phx_close, then the join", () =>
    Effect.gen(function*() {
      const server = yield* startServer(layer, { transport })
      const client = yield* connect(server.socketUrl)
      yield* client.send(["1", "1", "room:1", "phx_join", {}])
      yield* client.next((m) => m[1] === "1")
      yield* client.send(["1", "2", "room:1", "a", { n: 1 }])
      yield* client.send(["5", "5", "room:1", "phx_join", {}])
      const frames = [yield* client.next(), yield* client.next(), yield* client.next()]
      expect(frames).toEqual([
        ["1", "2", "room:1", "phx_reply", { status: "ok", response: { n: 1 } }],
        ["1", "1", "room:1", "phx_close", {}],
        ["5", "5", "room:1", "phx_reply", { status: "ok", response: {} }]
      ])
    }))
})
