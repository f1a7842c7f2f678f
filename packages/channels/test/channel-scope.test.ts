/**
 * A channel's `scope` is made when a hook first asks for it, in `join` or
 * later, and is closed once when the channel ends, however it ends, after
 * `leave`. Assigns: per channel, and per socket, copied on the first
 * `assign` so that what `connect` returned is left alone.
 */
import type { ChannelConn } from "@effect-channels/core"
import { ChannelHandler, ChannelTest } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Scope from "effect/Scope"
import { Log } from "./utils/log.js"


const connectAssigns = { user: "ada" }

const Handler = ChannelHandler.layer({
  connect: () => Effect.succeed({ assigns: connectAssigns }),
  join: (conn, event) =>
    Effect.gen(function*() {
      const log = yield* Log
      if (event.topic.startsWith("in-join:")) {
        yield* Scope.addFinalizer(conn.scope, log.add(`closed ${conn.topic}`))
      }
      return conn.allowJoin()
    }),
  incoming: (conn, event) =>
    Effect.gen(function*() {
      const log = yield* Log
      switch (event.event) {
        case "hold":
          yield* Scope.addFinalizer(conn.scope, log.add(`closed ${conn.topic}`))
          return yield* conn.reply(event, "ok", {})
        case "crash":
          return yield* Effect.die("boom")
        case "assign":
          yield* conn.assign("seen", true)
          yield* conn.socket.assign("last", conn.topic)
          return yield* conn.reply(event, "ok", {
            channel: yield* conn.assigns,
            socket: conn.socket.assigns
          })
        case "peek":
          return yield* conn.reply(event, "ok", { channel: yield* conn.assigns })
      }
    }),
  leave: (conn, reason) => Effect.flatMap(Log, (log) => log.add(`leave ${conn.topic} ${reason}`))
})

const TestLayer = ChannelTest.layer.pipe(Layer.provideMerge(Handler), Layer.provideMerge(Log.Default))

const lines = Effect.flatMap(Log, (log) => log.lines)

describe("a channel's scope", () => {
  it.scoped("asked for in join: closed once, after leave, when the client leaves", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "in-join:1")
      yield* ChannelTest.leave(channel)
      yield* ChannelTest.close(socket)
      expect(yield* lines).toEqual(["leave in-join:1 left", "closed in-join:1"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("first asked for in incoming: closed when the connection ends, and by a duplicate join", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const first = yield* ChannelTest.join(socket, "room:1")
      const other = yield* ChannelTest.join(socket, "room:2")
      yield* ChannelTest.assertReply(first, yield* ChannelTest.push(first, "hold"), "ok")
      yield* ChannelTest.assertReply(other, yield* ChannelTest.push(other, "hold"), "ok")
      yield* ChannelTest.join(socket, "room:1")
      yield* ChannelTest.assertPush(first, "phx_close")
      expect(yield* lines).toEqual(["leave room:1 duplicate", "closed room:1"])
      yield* ChannelTest.close(socket)
      expect(yield* lines).toEqual([
        "leave room:1 duplicate",
        "closed room:1",
        "leave room:1 disconnected",
        "leave room:2 disconnected",
        "closed room:2"
      ])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("closed when the channel crashes", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:3")
      yield* ChannelTest.assertReply(channel, yield* ChannelTest.push(channel, "hold"), "ok")
      yield* ChannelTest.push(channel, "crash")
      yield* ChannelTest.assertPush(channel, "phx_error", { reason: "channel_crash" })
      expect(yield* lines).toEqual(["leave room:3 crashed", "closed room:3"])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("closed when the connection is lost", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      yield* ChannelTest.join(socket, "in-join:2")
      yield* ChannelTest.abort(socket)
      expect(yield* lines).toEqual(["leave in-join:2 disconnected", "closed in-join:2"])
    }).pipe(Effect.provide(TestLayer)))
})

describe("a channel's scope, asked for after the channel ended", () => {
  it.scoped("is closed already: a finalizer added to it runs at once", () => {
    let seen: ChannelConn.ChannelConn | undefined
    const Late = ChannelHandler.layer({
      join: (conn) =>
        Effect.sync(() => {
          seen = conn
          return conn.allowJoin()
        })
    })
    return Effect.gen(function*() {
      const finalized = yield* Ref.make(0)
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "room:late")
      yield* ChannelTest.leave(channel)
      yield* Scope.addFinalizer(seen!.scope, Ref.update(finalized, (n) => n + 1))
      expect(yield* Ref.get(finalized)).toBe(1)
    }).pipe(Effect.provide(ChannelTest.layer.pipe(Layer.provideMerge(Late))))
  })
})

describe("assigns", () => {
  it.scoped("per channel; per socket, without changing what connect returned", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const one = yield* ChannelTest.join(socket, "room:a")
      const two = yield* ChannelTest.join(socket, "room:b")
      const ref = yield* ChannelTest.push(one, "assign")
      yield* ChannelTest.assertReply(one, ref, "ok", {
        channel: { seen: true },
        socket: { user: "ada", last: "room:a" }
      })
      const peek = yield* ChannelTest.push(two, "peek")
      yield* ChannelTest.assertReply(two, peek, "ok", { channel: {} })
      expect(socket.socket.assigns).toEqual({ user: "ada", last: "room:a" })
      expect(connectAssigns).toEqual({ user: "ada" })
    }).pipe(Effect.provide(TestLayer)))
})
