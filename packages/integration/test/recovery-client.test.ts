/**
 * `@effect-channels/client` with the official phoenix client on real
 * sockets: a channel cut off abruptly (a TCP proxy resets both sides) gets,
 * once it is back, every broadcast it missed, once, in order; one whose
 * position the history no longer holds, or whose server restarted (a new
 * epoch), is told it did not recover and gets nothing replayed; the
 * application's join callbacks never see the protocol's fields.
 */
import { RecoverableChannel } from "@effect-channels/client"
import { ChannelBroadcaster, ChannelHandler, ChannelHistory } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Socket } from "phoenix"
import * as Client from "./utils/phoenixClient.js"
import { eventually } from "./utils/rawClient.js"
import { startServer, type TestServer } from "./utils/server.js"
import * as TcpProxy from "./utils/tcpProxy.js"

const topic = "rooms:lobby"

const handler = ChannelHandler.layer({
  join: (conn, event) => Effect.succeed(conn.allowJoin({ welcome: event.topic }))
})

const withHistory = (size: number) =>
  ChannelBroadcaster.layerLocal.pipe(Layer.provide(ChannelHistory.layer({ "rooms:*": { size, ttl: "1 minute" } })))

const serve = (size: number) => startServer(handler, { broadcaster: withHistory(size) })

/** A recoverable channel, joined, with everything its application sees recorded. */
const member = (socket: Socket) =>
  Effect.gen(function*() {
    const seen: Array<number> = []
    const joins: Array<RecoverableChannel.Joined> = []
    const responses: Array<unknown> = []
    const recoverable = RecoverableChannel.make(socket, topic, { user: "ada" }, {
      onJoin: (joined) => joins.push(joined)
    })
    recoverable.channel.on("seq", (payload: { readonly n: number }) => {
      seen.push(payload.n)
    })
    yield* Client.until(
      (tick) => recoverable.channel.join().receive("ok", (response: unknown) => {
        responses.push(response)
        tick()
      }),
      () => responses.length === 1,
      "the first join"
    )
    return { recoverable, seen, joins, responses }
  })

/** A member whose connection goes through a proxy that can cut it. */
const throughProxy = (server: TestServer) =>
  Effect.gen(function*() {
    const proxy = yield* TcpProxy.start(server.port)
    const socket = yield* Client.socket(`ws://127.0.0.1:${proxy.port}/socket`)
    return { proxy, ada: yield* member(socket) }
  })

const publish = (server: TestServer, from: number, to: number) =>
  Effect.forEach(
    Array.from({ length: to - from + 1 }, (_, i) => from + i),
    (n) => server.broadcaster.broadcast(topic, "seq", { n }),
    { discard: true }
  )

const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** The server has seen the channel go (the proxy reset its side too). */
const gone = (server: TestServer) => eventually(server.broker.subscribers(topic), (n) => n === 0)

describe("RecoverableChannel", () => {
  it.scopedLive("a first join reports recovered false, with the topic's position; the app's response is its own", () =>
    Effect.gen(function*() {
      const server = yield* serve(100)
      yield* publish(server, 1, 3)
      const socket = yield* Client.socket(server.socketUrl)
      const ada = yield* member(socket)
      expect(ada.responses).toEqual([{ welcome: topic }])
      expect(ada.joins).toHaveLength(1)
      const [first] = ada.joins
      expect(first!.recovered).toBe(false)
      expect(first!.since).toBeUndefined()
      expect(first!.position).toMatch(/^.+:3$/)
      expect(ada.recoverable.position).toBe(first!.position)
      // Nothing before the join is replayed to a first join.
      yield* publish(server, 4, 4)
      yield* Client.until((tick) => ada.recoverable.channel.on("seq", tick), () => ada.seen.length > 0, "the live broadcast")
      expect(ada.seen).toEqual([4])
      expect(ada.recoverable.position).toBe(first!.position!.replace(/:3$/, ":4"))
    }))

  it.scopedLive("cut off abruptly while 100 broadcasts flow: every broadcast exactly once, in order, and recovered true", () =>
    Effect.gen(function*() {
      const server = yield* serve(1000)
      const { ada, proxy } = yield* throughProxy(server)
      let published = 0
      const flow = yield* Effect.fork(Effect.forEach(range(1, 100), (n) =>
        Effect.zipRight(
          server.broadcaster.broadcast(topic, "seq", { n }),
          Effect.zipRight(Effect.sync(() => published = n), Effect.sleep("5 millis"))
        ), { discard: true }))

      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n >= 20)
      yield* proxy.cut
      yield* gone(server)
      const seenAtCut = ada.seen.length
      // Broadcasts go on while the client is away, then it may come back.
      yield* eventually(Effect.sync(() => published), (n) => n >= seenAtCut + 20)
      yield* proxy.restore
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n >= 100, 10_000)
      yield* Effect.fromFiber(flow)
      expect(ada.seen).toEqual(range(1, 100))
      expect(proxy.passed()).toBeGreaterThanOrEqual(2)
      expect(ada.joins.map((joined) => joined.recovered)).toEqual([false, true])
      expect(ada.joins[1]!.since).toMatch(new RegExp(`:${seenAtCut}$`))
      expect(ada.responses).toEqual([{ welcome: topic }, { welcome: topic }])
      expect(ada.recoverable.position).toMatch(/:100$/)
    }), 20_000)

  it.scopedLive("an intercepted event (handleOut) carries its position too: cut off, the channel recovers it", () =>
    Effect.gen(function*() {
      const intercepting = ChannelHandler.layer({
        join: (conn, event) => Effect.succeed(conn.allowJoin({ welcome: event.topic })),
        intercept: { events: ["seq"], handleOut: (_conn, _event, payload) => Effect.succeed(Option.some(payload)) }
      })
      const server = yield* startServer(intercepting, { broadcaster: withHistory(100) })
      const { ada, proxy } = yield* throughProxy(server)
      yield* publish(server, 1, 3)
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 3)
      expect(ada.recoverable.position).toMatch(/:3$/)
      yield* proxy.cut
      yield* gone(server)
      yield* publish(server, 4, 6)
      yield* proxy.restore
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 6, 10_000)
      expect(ada.seen).toEqual(range(1, 6))
      expect(ada.joins.map((joined) => joined.recovered)).toEqual([false, true])
    }), 20_000)

  it.scopedLive("a position the history no longer holds (size 10, 50 missed): recovered false, nothing replayed", () =>
    Effect.gen(function*() {
      const server = yield* serve(10)
      const { ada, proxy } = yield* throughProxy(server)
      yield* publish(server, 1, 5)
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 5)
      yield* proxy.cut
      yield* gone(server)
      yield* publish(server, 6, 55)
      yield* proxy.restore
      yield* eventually(Effect.sync(() => ada.joins.length), (n) => n === 2, 10_000)
      expect(ada.joins[1]).toMatchObject({ recovered: false })
      expect(ada.joins[1]!.since).toMatch(/:5$/)
      expect(ada.joins[1]!.position).toMatch(/:55$/)
      yield* publish(server, 56, 56)
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 6)
      expect(ada.seen).toEqual([1, 2, 3, 4, 5, 56])
      expect(ada.responses).toEqual([{ welcome: topic }, { welcome: topic }])
    }), 20_000)

  it.scopedLive("a restarted server (its history lost, a new epoch): recovered false, nothing replayed", () =>
    Effect.gen(function*() {
      const firstScope = yield* Effect.acquireRelease(Scope.make(), (scope) => Scope.close(scope, Exit.void))
      const first = yield* Scope.extend(serve(100), firstScope)
      const { ada, proxy } = yield* throughProxy(first)
      yield* publish(first, 1, 3)
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 3)
      const before = ada.recoverable.position!
      yield* Scope.close(firstScope, Exit.void)

      // The new server's first broadcasts, before the client can reach it.
      const second = yield* serve(100)
      yield* publish(second, 4, 6)
      yield* proxy.retarget(second.port)
      yield* eventually(Effect.sync(() => ada.joins.length), (n) => n === 2, 10_000)
      expect(ada.joins[1]).toEqual({ recovered: false, since: before, position: ada.joins[1]!.position })
      const epoch = (position: string) => position.slice(0, position.lastIndexOf(":"))
      expect(epoch(ada.joins[1]!.position!)).not.toBe(epoch(before))
      expect(ada.joins[1]!.position).toMatch(/:3$/)
      yield* publish(second, 7, 7)
      yield* eventually(Effect.sync(() => ada.seen.length), (n) => n === 4)
      expect(ada.seen).toEqual([1, 2, 3, 7])
      expect(ada.responses).toEqual([{ welcome: topic }, { welcome: topic }])
    }), 20_000)

  it.scopedLive("a stored position starts the first join where it left off, and each new one is given to onPosition", () =>
    Effect.gen(function*() {
      const server = yield* serve(100)
      const socket = yield* Client.socket(server.socketUrl)
      const stored: Array<string> = []
      const first = yield* member(socket)
      yield* publish(server, 1, 4)
      yield* eventually(Effect.sync(() => first.seen.length), (n) => n === 4)
      const kept = first.recoverable.position!
      yield* Effect.async<void>((resume) => {
        first.recoverable.channel.leave().receive("ok", () => resume(Effect.void))
      })
      yield* gone(server)
      yield* publish(server, 5, 7)

      const seen: Array<number> = []
      const later = RecoverableChannel.make(socket, topic, () => ({ user: "ada" }), {
        position: kept,
        onPosition: (position) => stored.push(position)
      })
      later.channel.on("seq", (payload: { readonly n: number }) => {
      seen.push(payload.n)
    })
      const response = yield* Effect.async<unknown>((resume) => {
        later.channel.join().receive("ok", (response: unknown) => resume(Effect.succeed(response)))
      })
      expect(response).toEqual({ welcome: topic })
      expect(later.joined).toEqual({ recovered: true, since: kept, position: kept })
      yield* eventually(Effect.sync(() => seen.length), (n) => n === 3)
      expect(seen).toEqual([5, 6, 7])
      expect(stored.map((position) => position.slice(position.lastIndexOf(":") + 1))).toEqual(["5", "6", "7"])
      // Not a position: ignored, a first join.
      const fresh = RecoverableChannel.make(socket, "rooms:other", {}, { position: "damaged" })
      expect(fresh.position).toBeUndefined()
    }))

  it.scopedLive("the broadcasts to a channel of the topic still leaving reach a new one before its join's reply: each once", () =>
    Effect.gen(function*() {
      const server = yield* serve(100)
      const socket = yield* Client.socket(server.socketUrl)
      const first = yield* member(socket)
      yield* publish(server, 1, 4)
      yield* eventually(Effect.sync(() => first.seen.length), (n) => n === 4)
      // Published to the first channel, on their way while the second one joins (phoenix leaves the first).
      yield* publish(server, 5, 7)
      const seen: Array<number> = []
      const second = RecoverableChannel.make(socket, topic, {}, { position: first.recoverable.position })
      second.channel.on("seq", (payload: { readonly n: number }) => {
        seen.push(payload.n)
      })
      second.channel.join()
      yield* eventually(Effect.sync(() => second.joined), (joined) => joined !== undefined)
      yield* publish(server, 8, 8)
      yield* eventually(Effect.sync(() => seen.length), (n) => n >= 4)
      expect(seen).toEqual([5, 6, 7, 8])
      expect(second.joined!.recovered).toBe(true)
      expect(second.position).toMatch(/:8$/)
    }))
})
