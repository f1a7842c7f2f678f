import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as TestClock from "effect/TestClock"
import * as Broker from "../src/Broker.js"
import * as ChannelBroadcaster from "../src/ChannelBroadcaster.js"
import * as ChannelHandler from "../src/ChannelHandler.js"
import * as ChannelHistory from "../src/ChannelHistory.js"
import * as ChannelTest from "../src/ChannelTest.js"
import type { Outbound } from "../src/protocol/Message.js"

const joined: Array<unknown> = []
const Handler = ChannelHandler.layer({
  join: (conn, event) =>
    Effect.sync(() => {
      joined.push(event.payload)
      return conn.allowJoin({ hello: "world" })
    })
})

const layerWith = (topics: Record<string, ChannelHistory.TopicOptions>) =>
  Handler.pipe(
    Layer.provideMerge(ChannelTest.layer),
    Layer.provide(Layer.orDie(ChannelHistory.layer(topics)))
  )

const TestLayer = layerWith({ "rooms:*": { size: 5, ttl: "1 minute" } })

/** The broadcasts a socket received on a topic, as `[ref, payload]`: with a position, they come as pushes with a ref. */
const broadcastsOf = (socket: ChannelTest.TestSocket, topic: string) =>
  ChannelTest.received(socket).flatMap((message: Outbound) =>
    message._tag !== "Reply" && message.topic === topic && message.event === "msg"
      ? [[message._tag === "Push" ? message.ref : null, message.payload] as const]
      : []
  )

const broadcast = (topic: string, n: number) =>
  Effect.flatMap(ChannelBroadcaster.ChannelBroadcaster, (broadcaster) => broadcaster.broadcast(topic, "msg", { n }))

const epochOf = (reply: unknown) => {
  const position = ChannelHistory.parse((reply as Record<string, unknown>)._position)
  if (position === undefined) throw new Error(`no position in ${JSON.stringify(reply)}`)
  return position
}

/** A first client of the lobby: its socket, its channel, and the epoch of the lobby's history. */
const firstMember = Effect.gen(function*() {
  const socket = yield* ChannelTest.connect()
  const channel = yield* ChannelTest.join(socket, "rooms:lobby")
  return { socket, channel, epoch: epochOf(channel.reply).epoch }
})

describe("ChannelHistory", () => {
  it("formats and parses positions, refusing what is not one", () => {
    expect(ChannelHistory.format({ epoch: "abc", offset: 7 })).toBe("abc:7")
    expect(ChannelHistory.parse("abc:7")).toEqual({ epoch: "abc", offset: 7 })
    expect(ChannelHistory.parse("a:b:12")).toEqual({ epoch: "a:b", offset: 12 })
    for (const bad of ["abc", ":1", "abc:", "abc:-1", "abc:01", "abc:1.5", "abc:99999999999999999", 7, null, {}]) {
      expect(ChannelHistory.parse(bad)).toBeUndefined()
    }
  })

  it.effect("refuses a configuration out of range with every problem", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(ChannelHistory.make({ "a:*": { size: 0, ttl: "1 minute" }, b: { size: 3, ttl: 0 } }))
      expect(error._tag).toBe("ChannelHistoryConfigError")
      expect(error.problems).toHaveLength(2)
      expect(error.message).toContain("a:*: size must be an integer")
    }))

  it.scoped("a first join is not recovered and gets the topic's position; broadcasts carry theirs", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      expect(lobby.reply).toMatchObject({ hello: "world", _recovered: false })
      const { epoch, offset } = epochOf(lobby.reply)
      expect(offset).toBe(0)
      yield* broadcast("rooms:lobby", 1)
      yield* broadcast("rooms:lobby", 2)
      yield* ChannelTest.assertPush(lobby, "msg", { n: 2 })
      expect(broadcastsOf(socket, "rooms:lobby")).toEqual([[`${epoch}:1`, { n: 1 }], [`${epoch}:2`, { n: 2 }]])
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a rejoin with its last position gets what it missed, in order, then live, each once", () =>
    Effect.gen(function*() {
      const { channel: lobby, epoch, socket: first } = yield* firstMember
      yield* broadcast("rooms:lobby", 1)
      yield* ChannelTest.assertPush(lobby, "msg", { n: 1 })
      yield* ChannelTest.abort(first)
      for (let n = 2; n <= 5; n++) yield* broadcast("rooms:lobby", n)
      joined.length = 0
      const second = yield* ChannelTest.connect()
      const again = yield* ChannelTest.join(second, "rooms:lobby", { user: "ada", _position: `${epoch}:1` })
      expect(joined).toEqual([{ user: "ada" }])
      expect(again.reply).toEqual({ hello: "world", _position: `${epoch}:1`, _recovered: true })
      yield* ChannelTest.assertPush(again, "msg", { n: 5 })
      yield* broadcast("rooms:lobby", 6)
      yield* ChannelTest.assertPush(again, "msg", { n: 6 })
      expect(broadcastsOf(second, "rooms:lobby")).toEqual(
        [2, 3, 4, 5, 6].map((n) => [`${epoch}:${n}`, { n }])
      )
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a position older than the history, from another epoch, or ahead is not recovered: nothing replayed", () =>
    Effect.gen(function*() {
      const { epoch } = yield* firstMember
      for (let n = 1; n <= 8; n++) yield* broadcast("rooms:lobby", n)
      for (const position of [`${epoch}:2`, `other:8`, `${epoch}:9`, "garbage"]) {
        const socket = yield* ChannelTest.connect()
        const channel = yield* ChannelTest.join(socket, "rooms:lobby", { _position: position })
        expect(channel.reply).toEqual({ hello: "world", _position: `${epoch}:8`, _recovered: false })
        yield* ChannelTest.refutePush(channel, "msg")
      }
      // The oldest position the history of 5 still covers.
      const socket = yield* ChannelTest.connect()
      const channel = yield* ChannelTest.join(socket, "rooms:lobby", { _position: `${epoch}:3` })
      expect(channel.reply).toMatchObject({ _recovered: true })
      yield* ChannelTest.assertPush(channel, "msg", { n: 8 })
      expect(broadcastsOf(socket, "rooms:lobby").map(([, payload]) => payload)).toEqual(
        [4, 5, 6, 7, 8].map((n) => ({ n }))
      )
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("broadcasts expire after their ttl; a client that missed nothing still recovers", () =>
    Effect.gen(function*() {
      const { epoch } = yield* firstMember
      yield* broadcast("rooms:lobby", 1)
      yield* broadcast("rooms:lobby", 2)
      yield* TestClock.adjust("2 minutes")
      const late = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { _position: `${epoch}:1` })
      expect(late.reply).toMatchObject({ _recovered: false, _position: `${epoch}:2` })
      const current = yield* ChannelTest.join(yield* ChannelTest.connect(), "rooms:lobby", { _position: `${epoch}:2` })
      expect(current.reply).toMatchObject({ _recovered: true, _position: `${epoch}:2` })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a topic without a history is as before: no position, params untouched", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      joined.length = 0
      const channel = yield* ChannelTest.join(socket, "plain:1", { _position: "x:1" })
      expect(channel.reply).toEqual({ hello: "world" })
      expect(joined).toEqual([{ _position: "x:1" }])
      yield* broadcast("plain:1", 1)
      yield* ChannelTest.assertPush(channel, "msg", { n: 1 })
      expect(broadcastsOf(socket, "plain:1")).toEqual([[null, { n: 1 }]])
      expect(ChannelTest.received(socket).some((message) => message._tag === "Broadcast")).toBe(true)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a binary broadcast on a topic with a history is refused at the call", () =>
    Effect.gen(function*() {
      const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
      const refused = yield* Effect.either(broadcaster.broadcast("rooms:lobby", "bin", new Uint8Array([1, 2])))
      expect(Either.isLeft(refused) && refused.left._tag).toBe("UnrecoverablePayload")
      const plain = yield* Effect.either(broadcaster.broadcast("plain:1", "bin", new Uint8Array([1, 2])))
      expect(Either.isRight(plain)).toBe(true)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a stream that skips a position ends the channel with phx_error, so that its client rejoins", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelTest.connect()
      const lobby = yield* ChannelTest.join(socket, "rooms:lobby")
      const { epoch } = epochOf(lobby.reply)
      const broker = yield* Broker.Broker
      const skipped = new Broker.Envelope({ _tag: "Broadcast", topic: "rooms:lobby", event: "msg", payload: { n: 2 } })
      yield* broker.publish(skipped.at({ epoch, offset: 2 }))
      yield* ChannelTest.assertPush(lobby, "phx_error", { reason: "resync" })
      yield* ChannelTest.refutePush(lobby, "msg")
    }).pipe(Effect.provide(TestLayer)))
})

describe("ChannelHistory with handleOut", () => {
  const Intercepting = ChannelHandler.layer({
    join: (conn) => Effect.succeed(conn.allowJoin()),
    intercept: {
      events: ["msg"],
      handleOut: (_conn, _event, payload) => Effect.succeed(Option.some({ ...(payload as object), seen: true }))
    }
  }).pipe(
    Layer.provideMerge(ChannelTest.layer),
    Layer.provide(Layer.orDie(ChannelHistory.layer({ "rooms:*": { size: 5, ttl: "1 minute" } })))
  )

  it.scoped("an intercepted broadcast is pushed with its position, live and replayed", () =>
    Effect.gen(function*() {
      const { channel: lobby, epoch, socket: first } = yield* firstMember
      yield* broadcast("rooms:lobby", 1)
      yield* broadcast("rooms:lobby", 2)
      yield* ChannelTest.assertPush(lobby, "msg", { n: 2, seen: true })
      expect(broadcastsOf(first, "rooms:lobby")).toEqual([[`${epoch}:1`, { n: 1, seen: true }], [`${epoch}:2`, { n: 2, seen: true }]])
      const second = yield* ChannelTest.connect()
      const again = yield* ChannelTest.join(second, "rooms:lobby", { _position: `${epoch}:1` })
      yield* ChannelTest.assertPush(again, "msg", { n: 2, seen: true })
      expect(broadcastsOf(second, "rooms:lobby")).toEqual([[`${epoch}:2`, { n: 2, seen: true }]])
    }).pipe(Effect.provide(Intercepting)))
})
