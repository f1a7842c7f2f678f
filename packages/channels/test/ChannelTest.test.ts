import { ChannelEvent, ChannelHandler, ChannelTest } from "@effect-channels/core"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as TestClock from "effect/TestClock"
import { Log } from "./utils/log.js"


const Shout = Schema.Struct({ text: Schema.String, times: Schema.Number })

const Handler = ChannelHandler.layer({
  connect: (info) =>
    info.params["token"] === "bad"
      ? Effect.fail(new ConnectRefused({ reason: "bad token" }))
      : Effect.succeed({ id: info.params["user"], assigns: { user: info.params["user"] } }),
  join: (conn, event) =>
    Effect.gen(function*() {
      if (event.topic === "private") return conn.refuseJoin({ reason: "unauthorized" })
      if (event.topic === "crash") return yield* Effect.die("boom")
      yield* conn.push("welcome", { user: conn.socket.assigns["user"] ?? null })
      return conn.allowJoin({ joined: event.topic })
    }),
  incoming: (conn, event) =>
    Effect.gen(function*() {
      switch (event.event) {
        case "echo":
          return yield* conn.reply(event, "ok", event.payload)
        case "shout": {
          const { text, times } = yield* ChannelEvent.decodePayload(event, Shout)
          return yield* conn.broadcast("shouted", { text: text.repeat(times) })
        }
        case "later":
          yield* Effect.sleep("5 seconds")
          return yield* conn.push("done", {})
        case "fail":
          return yield* Effect.fail("handler failure")
        case "bye":
          return yield* conn.leave
      }
    }),
  leave: (conn, reason) => Effect.flatMap(Log, (log) => log.add(`leave ${conn.topic} ${reason}`)),
  disconnect: (socket) =>
    Effect.flatMap(Log, (log) => log.add(`disconnect ${socket.assigns["user"]}`))
})

const TestLayer = ChannelTest.layer.pipe(
  Layer.provideMerge(Handler),
  Layer.provideMerge(Log.Default)
)

describe("ChannelTest", () => {
  it.scoped("connects, or fails with the refusal", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      expect(socket.socket.assigns).toEqual({ user: "ada" })
      const refused = yield* Effect.flip(ChannelTest.connect({ token: "bad" }))
      expect(refused).toBeInstanceOf(ConnectRefused)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("joins with the join reply, then receives what join pushed", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const channel = yield* ChannelTest.subscribeAndJoin(socket, "room:1")
      expect(channel.reply).toEqual({ joined: "room:1" })
      yield* ChannelTest.assertPush(channel, "welcome", { user: "ada" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a refused or crashed join fails with the error reply", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const refused = yield* Effect.flip(ChannelTest.join(socket, "private"))
      expect(refused.reason).toEqual({ reason: "unauthorized" })
      const crashed = yield* Effect.flip(ChannelTest.join(socket, "crash"))
      expect(crashed.reason).toEqual({ reason: "join crashed" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("push and assertReply, by value and by predicate", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:1")
      const ref = yield* ChannelTest.push(channel, "echo", { n: 1 })
      yield* ChannelTest.assertReply(channel, ref, "ok", { n: 1 })
      const ref2 = yield* ChannelTest.push(channel, "echo", { n: 2 })
      yield* ChannelTest.assertReply(channel, ref2, "ok", (payload) => (payload as { n: number }).n === 2)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("binary payloads go through real V2 binary frames", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:1")
      const ref = yield* ChannelTest.push(channel, "echo", new Uint8Array([1, 2, 3]))
      yield* ChannelTest.assertReply(channel, ref, "ok", new Uint8Array([1, 2, 3]))
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("assertBroadcast sees the broadcast, assertPush its delivery to members", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.connect({ user: "ada" })
      const bob = yield* ChannelTest.connect({ user: "bob" })
      const adaRoom = yield* ChannelTest.join(ada, "room:1")
      const bobRoom = yield* ChannelTest.join(bob, "room:1")
      yield* ChannelTest.push(adaRoom, "shout", { text: "hi", times: 2 })
      yield* ChannelTest.assertBroadcast("room:1", "shouted", { text: "hihi" })
      yield* ChannelTest.assertPush(adaRoom, "shouted", { text: "hihi" })
      yield* ChannelTest.assertPush(bobRoom, "shouted", { text: "hihi" })
      yield* ChannelTest.refuteBroadcast("room:1", "shouted")
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("an invalid payload gets an error reply naming the path; the channel goes on", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:1")
      const ref = yield* ChannelTest.push(channel, "shout", { text: "hi", times: "twice" })
      const response = yield* ChannelTest.assertReply(channel, ref, "error")
      expect(response).toMatchObject({ reason: "invalid payload", path: ["times"] })
      const echo = yield* ChannelTest.push(channel, "echo", {})
      yield* ChannelTest.assertReply(channel, echo, "ok", {})
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a failing handler crashes its channel only: phx_error, leave, neighbours go on", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const one = yield* ChannelTest.join(socket, "room:1")
      const two = yield* ChannelTest.join(socket, "room:2")
      yield* ChannelTest.push(one, "fail")
      yield* ChannelTest.assertPush(one, "phx_error", { reason: "channel_crash" })
      const ref = yield* ChannelTest.push(two, "echo", { still: "here" })
      yield* ChannelTest.assertReply(two, ref, "ok", { still: "here" })
      expect(yield* Log.use((log) => log.lines)).toEqual(["leave room:1 crashed"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("events queued behind a crash are not handled by the crashed channel", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const channel = yield* ChannelTest.join(socket, "room:1")
      yield* ChannelTest.push(channel, "fail")
      const after = yield* ChannelTest.push(channel, "echo", { late: true })
      yield* ChannelTest.assertPush(channel, "phx_error", { reason: "channel_crash" })
      const failure = yield* Effect.flip(ChannelTest.assertReply(channel, after, "ok"))
      expect(failure.message).toContain(`expected a reply to ref ${after}`)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("leave, server-side leave and close run leave and disconnect once", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const one = yield* ChannelTest.join(socket, "room:1")
      const two = yield* ChannelTest.join(socket, "room:2")
      yield* ChannelTest.join(socket, "room:3")
      yield* ChannelTest.leave(one)
      yield* ChannelTest.assertPush(one, "phx_close", {})
      yield* ChannelTest.push(two, "bye")
      yield* ChannelTest.assertPush(two, "phx_close", {})
      yield* ChannelTest.close(socket)
      expect(yield* Log.use((log) => log.lines)).toEqual([
        "leave room:1 left",
        "leave room:2 closed",
        "leave room:3 disconnected",
        "disconnect ada"
      ])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("abort, like a lost transport, runs leave and disconnect once", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      yield* ChannelTest.join(socket, "room:1")
      yield* ChannelTest.abort(socket)
      expect(yield* Log.use((log) => log.lines)).toEqual(["leave room:1 disconnected", "disconnect ada"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("assertions wait in test time: a push 5 s later is seen with a 10 s timeout", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:1")
      yield* ChannelTest.push(channel, "later")
      yield* ChannelTest.refutePush(channel, "done", undefined, { timeout: "4 seconds" })
      yield* ChannelTest.assertPush(channel, "done", {}, { timeout: "10 seconds" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("the heartbeat timeout closes a silent connection, in test time", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      yield* TestClock.adjust("59 seconds")
      const ref = yield* ChannelTest.join(socket, "room:1")
      yield* TestClock.adjust("59 seconds")
      expect(ref.reply).toEqual({ joined: "room:1" })
      yield* ChannelTest.refutePush(socket, "phx_close")
      const closed = yield* ChannelTest.assertClosed(socket, 1000, { timeout: "2 seconds" })
      expect(closed.reason).toBe("heartbeat timeout")
      expect(yield* Log.use((log) => log.lines)).toEqual(["leave room:1 disconnected", "disconnect ada"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a failed assertion lists what was received", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const channel = yield* ChannelTest.join(socket, "room:1")
      const failure = yield* Effect.flip(ChannelTest.assertPush(channel, "welcome", { user: "bob" }))
      expect(failure.message).toContain(`expected a push welcome with {"user":"bob"}`)
      expect(failure.message).toContain(`"event":"welcome","payload":{"user":"ada"}`)
    }).pipe(Effect.provide(TestLayer)))
})
