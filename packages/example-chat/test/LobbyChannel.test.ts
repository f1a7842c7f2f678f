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
  it.scoped("a rejoin (rejoin: true) is tracked but not announced again", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby")
      yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { user: "ada", rejoin: true })
      yield* ChannelTest.assertPresence(watcher, { ada: 1 }, { timeout: "2 seconds" })
      yield* ChannelTest.refuteBroadcast("rooms:lobby", "user:entered", { user: "ada" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("rename moves the presence to the new name, keeps online_at, and is broadcast", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { user: "ada" })
      const state = yield* ChannelTest.assertPush(ada, "presence_state")
      const onlineAt = (state as { ada: { metas: Array<{ online_at: number }> } }).ada.metas[0]!.online_at
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby")
      const ref = yield* ChannelTest.push(ada, "rename", { user: "lovelace" })
      yield* ChannelTest.assertReply(ada, ref, "ok", { user: "lovelace" })
      yield* ChannelTest.assertPush(watcher, "user:renamed", { from: "ada", to: "lovelace" })
      const after = yield* ChannelTest.assertPresence(watcher, { lovelace: 1 }, { timeout: "2 seconds" })
      expect(after["lovelace"]!.metas[0]!["online_at"]).toBe(onlineAt)
      // The same name again changes nothing.
      const again = yield* ChannelTest.push(ada, "rename", { user: "lovelace" })
      yield* ChannelTest.assertReply(ada, again, "ok", { user: "lovelace" })
      yield* ChannelTest.refutePush(watcher, "user:renamed", { from: "lovelace", to: "lovelace" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a member without a name who renames enters the presence, as from: null", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby")
      const guest = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby")
      const ref = yield* ChannelTest.push(guest, "rename", { user: "bob" })
      yield* ChannelTest.assertReply(guest, ref, "ok", { user: "bob" })
      yield* ChannelTest.assertBroadcast("rooms:lobby", "user:renamed", { from: null, to: "bob" })
      yield* ChannelTest.assertPresence(watcher, { bob: 1 }, { timeout: "2 seconds" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a blank, padded or too long name is refused, and the presence stays", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { user: "ada" })
      for (const user of ["", " ada ", "x".repeat(41), 42]) {
        const ref = yield* ChannelTest.push(ada, "rename", { user })
        const reply = yield* ChannelTest.assertReply(ada, ref, "error")
        expect(reply).toMatchObject({ reason: "invalid payload", path: ["user"] })
      }
      yield* ChannelTest.refuteBroadcast("rooms:lobby", "user:renamed")
      yield* ChannelTest.assertPresence(ada, { ada: 1 })
    }).pipe(Effect.provide(TestLayer)))
})
