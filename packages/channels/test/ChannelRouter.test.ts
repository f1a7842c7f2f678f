import { ChannelBroadcaster, ChannelRouter, ChannelTest } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Stream from "effect/Stream"

const Router = ChannelRouter.layer({
  "rooms:lobby": { join: (conn) => Effect.succeed(conn.allowJoin({ channel: "lobby" })) },
  "rooms:*": { join: (conn, event) => Effect.succeed(conn.allowJoin({ channel: "room", topic: event.topic })) },
  "user:*": {
    join: (conn, event) =>
      Effect.succeed(
        event.topic === `user:${conn.socket.assigns["user"]}`
          ? conn.allowJoin({ channel: "user" })
          : conn.refuseJoin({ reason: "unauthorized" })
      )
  }
}, {
  connect: (info) =>
    info.params["user"] === undefined
      ? Effect.fail(new ConnectRefused({ reason: "no user" }))
      : Effect.succeed({ assigns: { user: info.params["user"] } })
})

const TestLayer = Router.pipe(Layer.provideMerge(ChannelTest.layer))

describe("ChannelRouter", () => {
  it.scoped("routes topics to the first matching pattern; no pattern: unmatched topic", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      expect((yield* ChannelTest.join(socket, "rooms:lobby")).reply).toEqual({ channel: "lobby" })
      expect((yield* ChannelTest.join(socket, "rooms:42")).reply).toEqual({ channel: "room", topic: "rooms:42" })
      expect((yield* ChannelTest.join(socket, "user:ada")).reply).toEqual({ channel: "user" })
      expect((yield* Effect.flip(ChannelTest.join(socket, "user:bob"))).reason).toEqual({ reason: "unauthorized" })
      expect((yield* Effect.flip(ChannelTest.join(socket, "admin:1"))).reason).toEqual({ reason: "unmatched topic" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("the router's connect refuses, or sets the socket's assigns", () =>
    Effect.gen(function*() {
      expect(yield* Effect.flip(ChannelTest.connect({}))).toBeInstanceOf(ConnectRefused)
      expect((yield* ChannelTest.connect({ user: "ada" })).socket.assigns).toEqual({ user: "ada" })
    }).pipe(Effect.provide(TestLayer)))

  it("matches: a trailing * is a prefix, anything else is exact", () => {
    expect(ChannelRouter.matches("rooms:*", "rooms:1")).toBe(true)
    expect(ChannelRouter.matches("rooms:*", "room:1")).toBe(false)
    expect(ChannelRouter.matches("rooms:lobby", "rooms:lobby")).toBe(true)
    expect(ChannelRouter.matches("rooms:lobby", "rooms:lobby2")).toBe(false)
  })
})

describe("ChannelBroadcaster", () => {
  it.scoped("broadcasts reach members, and the broadcasts Stream sees them all", () =>
    Effect.gen(function*() {
      const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
      const observed = yield* Effect.fork(Stream.runCollect(Stream.take(broadcaster.broadcasts, 2)))
      yield* Effect.yieldNow()
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      expect(yield* broadcaster.connected).toBe(1)
      yield* broadcaster.broadcast("rooms:lobby", "news", { n: 1 })
      yield* broadcaster.broadcast("rooms:other", "news", { n: 2 })
      yield* ChannelTest.assertPush(lobby, "news", { n: 1 })
      yield* ChannelTest.refutePush(lobby, "news", { n: 2 })
      const seen = Chunk.toReadonlyArray(yield* Fiber.join(observed))
      expect(seen.map(({ payload, topic }) => [topic, payload])).toEqual([["rooms:lobby", { n: 1 }], ["rooms:other", { n: 2 }]])
      yield* ChannelTest.close(socket)
      expect(yield* broadcaster.connected).toBe(0)
    }).pipe(Effect.provide(TestLayer)))
})
