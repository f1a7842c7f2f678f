import { ChannelTest } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import * as LobbyChannel from "../src/LobbyChannel.js"

const TestLayer = LobbyChannel.layer.pipe(Layer.provideMerge(ChannelTest.layer))

describe("LobbyChannel", () => {
  it.scoped("anyone may join the lobby, and the lobby hears who entered", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.subscribeAndJoin(socket, "rooms:lobby", { user: "ada" })
      expect(lobby.reply).toEqual({})
      yield* ChannelTest.assertBroadcast("rooms:lobby", "user:entered", { user: "ada" })
      yield* ChannelTest.assertPush(lobby, "user:entered", { user: "ada" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a join without a user enters as null", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      yield* ChannelTest.join(socket, "rooms:lobby")
      yield* ChannelTest.assertBroadcast("rooms:lobby", "user:entered", { user: null })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("any other topic is refused as unauthorized", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const refused = yield* Effect.flip(ChannelTest.join(socket, "rooms:secret"))
      expect(refused.reason).toEqual({ reason: "unauthorized" })
      yield* ChannelTest.refuteBroadcast("rooms:secret", "user:entered")
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("new:msg is re-broadcast to every member, the sender included", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.connect()
      const bob = yield* ChannelTest.connect()
      const adaLobby = yield* ChannelTest.join(ada, "rooms:lobby", { user: "ada" })
      const bobLobby = yield* ChannelTest.join(bob, "rooms:lobby", { user: "bob" })
      yield* ChannelTest.push(adaLobby, "new:msg", { user: "ada", body: "hello" })
      yield* ChannelTest.assertBroadcast("rooms:lobby", "new:msg", { user: "ada", body: "hello" })
      yield* ChannelTest.assertPush(adaLobby, "new:msg", { user: "ada", body: "hello" })
      yield* ChannelTest.assertPush(bobLobby, "new:msg", { user: "ada", body: "hello" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("binary new:msg is re-broadcast as binary", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      yield* ChannelTest.push(lobby, "new:msg", new Uint8Array([104, 105]))
      yield* ChannelTest.assertPush(lobby, "new:msg", new Uint8Array([104, 105]))
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("ping is answered with its payload", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      const ref = yield* ChannelTest.push(lobby, "ping", { t: 42 })
      yield* ChannelTest.assertReply(lobby, ref, "ok", { t: 42 })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a silent socket is closed after 60 s of test time, and not before", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      yield* TestClock.adjust("59 seconds")
      const ref = yield* ChannelTest.push(lobby, "ping", { t: 1 })
      yield* ChannelTest.assertReply(lobby, ref, "ok", { t: 1 })
      yield* TestClock.adjust("59 seconds")
      const failure = yield* Effect.flip(ChannelTest.assertClosed(socket, 1000, { timeout: "500 millis" }))
      expect(failure.message).toBe("expected the server to close the connection")
      yield* ChannelTest.assertClosed(socket, 1000, { timeout: "1 second" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("members with a user are tracked with online_at; everyone sees the online list", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { user: "ada" })
      const state = yield* ChannelTest.assertPush(ada, "presence_state")
      expect(state).toEqual({ ada: { metas: [{ online_at: expect.any(Number), phx_ref: expect.any(String) }] } })
      const guest = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby")
      yield* ChannelTest.assertPresence(guest, { ada: 1 })
      const bob = yield* ChannelTest.connect()
      yield* ChannelTest.join(bob, "rooms:lobby", { user: "bob" })
      yield* ChannelTest.assertPresence(ada, { ada: 1, bob: 1 }, { timeout: "2 seconds" })
      yield* ChannelTest.close(bob)
      yield* ChannelTest.assertPresence(guest, { ada: 1 }, { timeout: "2 seconds" })
    }).pipe(Effect.provide(TestLayer)))
})
