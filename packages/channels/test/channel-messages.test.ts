/**
 * Messages to a channel from outside its client (Phoenix's `handle_info`),
 * under `TestClock`: a periodic push from `conn.fork` moves with test time
 * and stops when the channel ends, however it ends; `conn.subscribe` brings
 * another topic's broadcasts and ends with the channel; `intercept` changes
 * or drops a broadcast per recipient.
 */
import type { ChannelConn } from "@effect-channels/core"
import { ChannelBroadcaster, ChannelHandler, ChannelTest } from "@effect-channels/core"
import { Broker } from "@effect-channels/core/Broker"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as TestClock from "effect/TestClock"
import { Log } from "./utils/log.js"

const user = (conn: ChannelConn.ChannelConn) => String(conn.socket.assigns["user"])

const Handler = ChannelHandler.layer({
  connect: (info) => Effect.succeed({ assigns: { user: info.params["user"] ?? "?" } }),
  join: (conn) =>
    Effect.gen(function*() {
      const log = yield* Log
      if (conn.topic.startsWith("clock:")) {
        let n = 0
        yield* conn.fork(
          Effect.suspend(() => conn.push("tick", { n: ++n })).pipe(
            Effect.delay("1 second"),
            Effect.repeat(Schedule.forever),
            Effect.onInterrupt(() => log.add(`ticker ${conn.topic} interrupted`))
          )
        )
      }
      if (conn.topic.startsWith("inbox:")) yield* conn.subscribe(`mail:${user(conn)}`)
      if (conn.topic === "inbox:early") {
        // Delivered while the join is still running: held until its reply is out.
        const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
        yield* broadcaster.broadcast(`mail:${user(conn)}`, "mail", { subject: "early" })
        yield* Effect.repeatN(Effect.yieldNow(), 20)
      }
      if (conn.topic === "clock:failing") yield* conn.fork(Effect.delay(Effect.fail("gone"), "3 seconds"))
      return conn.allowJoin()
    }),
  incoming: (conn, event) => event.event === "stop" ? conn.leave : conn.broadcast(event.event, event.payload),
  intercept: {
    events: ["secret"],
    handleOut: (conn, _event, payload) =>
      Effect.succeed(
        (payload as { readonly to: string }).to === user(conn) ? Option.some({ ...payload as object, for: user(conn) }) : Option.none()
      )
  },
  leave: (conn, reason) => Effect.flatMap(Log, (log) => log.add(`leave ${conn.topic} ${reason}`))
})

const TestLayer = Handler.pipe(Layer.provideMerge(ChannelTest.layer), Layer.provideMerge(Log.Default))

const lines = Effect.flatMap(Log, (log) => log.lines)

describe("messages from outside the client", () => {
  it.scoped("a periodic push follows the TestClock, and stops when the client leaves", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const clock = yield* ChannelTest.join(socket, "clock:1")
      yield* ChannelTest.refutePush(clock, "tick", undefined, { timeout: "999 millis" })
      yield* TestClock.adjust("1 millis")
      yield* ChannelTest.assertPush(clock, "tick", { n: 1 })
      yield* TestClock.adjust("2 seconds")
      yield* ChannelTest.assertPush(clock, "tick", { n: 2 })
      yield* ChannelTest.assertPush(clock, "tick", { n: 3 })
      yield* ChannelTest.leave(clock)
      expect(yield* lines).toEqual(["leave clock:1 left", "ticker clock:1 interrupted"])
      yield* TestClock.adjust("10 seconds")
      yield* ChannelTest.refutePush(socket, "tick")
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("the fiber is interrupted however the channel ends: server-side leave, lost transport", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const first = yield* ChannelTest.join(socket, "clock:a")
      yield* ChannelTest.join(socket, "clock:b")
      yield* ChannelTest.push(first, "stop")
      yield* ChannelTest.assertPush(first, "phx_close")
      yield* ChannelTest.abort(socket)
      expect(yield* lines).toEqual([
        "leave clock:a closed",
        "ticker clock:a interrupted",
        "leave clock:b disconnected",
        "ticker clock:b interrupted"
      ])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a failing forked fiber crashes its channel: phx_error, leave with crashed", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "clock:failing")
      yield* TestClock.adjust("3 seconds")
      yield* ChannelTest.assertPush(channel, "phx_error", { reason: "channel_crash" })
      expect(yield* lines).toContain("leave clock:failing crashed")
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("conn.subscribe: broadcasts to mail:<user> reach the inbox channel; unsubscribed when it ends", () =>
    Effect.gen(function*() {
      const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
      const broker = yield* Broker
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const inbox = yield* ChannelTest.join(socket, "inbox:ada")
      yield* broadcaster.broadcast("mail:ada", "mail", { subject: "hi" })
      yield* ChannelTest.assertPush(inbox, "mail", { subject: "hi" })
      expect(yield* broker.subscribers("mail:ada")).toBe(1)
      yield* ChannelTest.leave(inbox)
      expect(yield* broker.subscribers("mail:ada")).toBe(0)
      yield* broadcaster.broadcast("mail:ada", "mail", { subject: "late" })
      yield* ChannelTest.refutePush(socket, "mail")
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("conn.subscribe in join: a broadcast delivered before the join reply follows it", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect({ user: "ada" })
      const inbox = yield* ChannelTest.join(socket, "inbox:early")
      yield* ChannelTest.assertPush(inbox, "mail", { subject: "early" })
      expect(ChannelTest.received(socket).map((message) => message._tag === "Reply" ? "reply" : message.event))
        .toEqual(["reply", "mail"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("intercept: each recipient's handleOut decides, per recipient", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.connect({ user: "ada" })
      const bob = yield* ChannelTest.connect({ user: "bob" })
      const adaRoom = yield* ChannelTest.join(ada, "room:1")
      const bobRoom = yield* ChannelTest.join(bob, "room:1")
      yield* ChannelTest.push(adaRoom, "secret", { to: "bob" })
      yield* ChannelTest.assertPush(bobRoom, "secret", { to: "bob", for: "bob" })
      yield* ChannelTest.refutePush(adaRoom, "secret")
      yield* ChannelTest.push(adaRoom, "public", { to: "all" })
      yield* ChannelTest.assertPush(adaRoom, "public", { to: "all" })
      yield* ChannelTest.assertPush(bobRoom, "public", { to: "all" })
    }).pipe(Effect.provide(TestLayer)))
})
