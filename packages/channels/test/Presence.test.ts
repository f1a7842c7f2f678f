import { ChannelHandler, ChannelTest, Presence } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import * as TestClock from "effect/TestClock"
import fc from "fast-check"
import { Presence as ClientPresence, Socket } from "phoenix"
import WebSocket from "ws"
import { eventually } from "./utils/rawClient.js"
import { startServer } from "./utils/server.js"

/**
 * Joins track `user` (from the join payload) with its `meta`, or only get the
 * state without one; `update` and `untrack` events do what they say.
 */
const Tracked = ChannelHandler.layer({
  join: (conn, event) =>
    Effect.gen(function*() {
      const { meta = {}, user } = event.payload as { user?: string; meta?: Record<string, unknown> }
      const presence = yield* Presence.Presence
      if (user !== undefined) yield* presence.track(conn, conn.topic, user, meta)
      else yield* presence.pushState(conn)
      return conn.allowJoin()
    }),
  incoming: (conn, event) =>
    Effect.gen(function*() {
      const presence = yield* Presence.Presence
      const { meta = {}, user } = event.payload as { user: string; meta?: Record<string, unknown> }
      if (event.event === "update") yield* Effect.orDie(presence.update(conn, conn.topic, user, meta))
      if (event.event === "untrack") yield* presence.untrack(conn, conn.topic, user)
      yield* conn.reply(event, "ok")
    })
})

const withPresence = (batchWindow: Duration.DurationInput) =>
  Tracked.pipe(
    Layer.provideMerge(Presence.layer({ batchWindow })),
    Layer.provideMerge(ChannelTest.layer)
  )

const TestLayer = withPresence("1 second")

describe("Presence, with ChannelTest", () => {
  it.scoped("the joiner gets presence_state; the others get one diff for the window", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", meta: { status: "away" } })
      const state = yield* ChannelTest.assertPush(ada, "presence_state")
      expect(state).toEqual({ ada: { metas: [{ status: "away", phx_ref: expect.any(String) }] } })
      const bob = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "bob" })
      yield* ChannelTest.assertPresence(bob, { ada: 1, bob: 1 })
      yield* ChannelTest.assertPresence(ada, { ada: 1, bob: 1 }, { timeout: "2 seconds" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("200 joins within one window are one presence_diff", () =>
    Effect.gen(function*() {
      for (let i = 0; i < 200; i++) {
        yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: `user${i}` })
      }
      const diff = (yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "1 second" })) as Presence.Diff
      expect(Object.keys(diff.joins)).toHaveLength(200)
      expect(diff.leaves).toEqual({})
      yield* ChannelTest.refuteBroadcast("room:1", "presence_diff", undefined, { timeout: "5 seconds" })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("an update diffs as a leave plus a join with phx_ref_prev", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", meta: { n: 1 } })
      const state = (yield* ChannelTest.assertPush(ada, "presence_state")) as Presence.State
      const first = state["ada"]!.metas[0]!.phx_ref
      yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "2 seconds" })
      yield* ChannelTest.push(ada, "update", { user: "ada", meta: { n: 2 } })
      const diff = (yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "2 seconds" })) as Presence.Diff
      expect(diff.leaves).toEqual({ ada: { metas: [{ n: 1, phx_ref: first }] } })
      expect(diff.joins).toEqual({ ada: { metas: [{ n: 2, phx_ref: expect.any(String), phx_ref_prev: first }] } })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("one key, two connections: two metas; closing one leaves one; any end untracks", () =>
    Effect.gen(function*() {
      const tab1 = yield* ChannelTest.connect()
      const tab2 = yield* ChannelTest.connect()
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      yield* ChannelTest.join(tab1, "room:1", { user: "ada" })
      const second = yield* ChannelTest.join(tab2, "room:1", { user: "ada" })
      yield* ChannelTest.assertPresence(watcher, { ada: 2 }, { timeout: "2 seconds" })
      yield* ChannelTest.close(tab1)
      yield* ChannelTest.assertPresence(watcher, { ada: 1 }, { timeout: "2 seconds" })
      yield* ChannelTest.leave(second)
      yield* ChannelTest.assertPresence(watcher, {}, { timeout: "2 seconds" })
      expect(yield* Presence.Presence.pipe(Effect.flatMap((p) => p.list("room:1")))).toEqual({})
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a silent connection's presence ends with its heartbeat timeout", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.connect()
      const room = yield* ChannelTest.join(watcher, "room:1")
      yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ghost" })
      yield* ChannelTest.assertPresence(room, { ghost: 1 }, { timeout: "2 seconds" })
      for (let i = 0; i < 7; i++) {
        yield* TestClock.adjust("10 seconds")
        yield* ChannelTest.push(room, "heartbeat-ish", { user: "nobody" })
      }
      yield* ChannelTest.assertPresence(room, {}, { timeout: "2 seconds" })
    }).pipe(Effect.provide(TestLayer)))
})

type Op =
  | { readonly _tag: "track"; readonly client: number; readonly user: number }
  | { readonly _tag: "update"; readonly client: number; readonly n: number }
  | { readonly _tag: "untrack"; readonly client: number }
  | { readonly _tag: "close"; readonly client: number }
  | { readonly _tag: "wait"; readonly millis: number }
  | { readonly _tag: "observe" }

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ _tag: fc.constant("track" as const), client: fc.nat(7), user: fc.nat(3) }),
  fc.record({ _tag: fc.constant("update" as const), client: fc.nat(7), n: fc.nat(9) }),
  fc.record({ _tag: fc.constant("untrack" as const), client: fc.nat(7) }),
  fc.record({ _tag: fc.constant("close" as const), client: fc.nat(7) }),
  fc.record({ _tag: fc.constant("wait" as const), millis: fc.integer({ min: 0, max: 1500 }) }),
  fc.constant({ _tag: "observe" as const })
)

const metaRefs = (state: Presence.State) =>
  Object.fromEntries(Object.entries(state).map(([key, { metas }]) => [key, metas.map((meta) => meta.phx_ref).sort()]))

interface Client {
  readonly socket: ChannelTest.TestSocket
  readonly channel: ChannelTest.TestChannel
  readonly user: string
  tracked: boolean
}

/** Plays the operations; then every observer's view, replayed by the official client, must equal the server's list. */
const play = (ops: ReadonlyArray<Op>) =>
  Effect.gen(function*() {
    const presence = yield* Presence.Presence
    const observers = [yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")]
    const clients = new Map<number, Client>()
    const request = (client: Client, event: string, payload: object) =>
      Effect.flatMap(ChannelTest.push(client.channel, event, payload), (ref) =>
        ChannelTest.assertReply(client.channel, ref, "ok", undefined, { timeout: "1 second" }))
    for (const step of ops) {
      const client = "client" in step ? clients.get(step.client) : undefined
      switch (step._tag) {
        case "track": {
          if (client !== undefined) break
          const socket = yield* ChannelTest.connect()
          const user = `u${step.user}`
          clients.set(step.client, { socket, channel: yield* ChannelTest.join(socket, "room:1", { user }), user, tracked: true })
          break
        }
        case "update":
          if (client?.tracked) yield* request(client, "update", { user: client.user, meta: { n: step.n } })
          break
        case "untrack":
          if (client?.tracked) {
            yield* request(client, "untrack", { user: client.user })
            client.tracked = false
          }
          break
        case "close":
          if (client !== undefined) {
            yield* ChannelTest.close(client.socket)
            clients.delete(step.client)
          }
          break
        case "wait":
          yield* TestClock.adjust(step.millis)
          break
        case "observe":
          observers.push(yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1"))
          break
      }
    }
    yield* TestClock.adjust("2 seconds")
    const server = metaRefs(yield* presence.list("room:1"))
    for (const observer of observers) {
      // The official client's own sync, fed what this observer received.
      let view: Presence.State = {}
      for (const message of ChannelTest.received(observer.socket)) {
        if (message._tag === "Reply" || message.topic !== "room:1") continue
        if (message.event === "presence_state") view = ClientPresence.syncState(view, message.payload as object)
        if (message.event === "presence_diff") view = ClientPresence.syncDiff(view, message.payload as { joins: object; leaves: object })
      }
      expect(metaRefs(view)).toEqual(server)
      expect(metaRefs(yield* ChannelTest.presenceOf(observer))).toEqual(server)
    }
  }).pipe(Effect.scoped, Effect.provide(TestLayer))

describe("Presence, the client's view never drifts", () => {
  it.effect("any interleaving of track/update/untrack/close: every observer's replayed view equals the server's list", () =>
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      yield* Effect.promise(() =>
        fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 40 }), (ops) => Runtime.runPromise(runtime)(play(ops))), {
          numRuns: 50
        })
      )
    }))
})

describe("Presence with the official Presence class, on real sockets", () => {
  const Served = Tracked.pipe(Layer.provide(Presence.layer({ batchWindow: "50 millis" })))

  it.scopedLive("three clients see each other; a client killed by a TCP reset disappears from the others' lists", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Served)
      const users = ["ada", "bob", "cy"]
      const clients = users.map((user) => {
        const socket = new Socket(server.socketUrl, { transport: WebSocket })
        socket.connect()
        const channel = socket.channel("room:1", { user })
        const presence = new ClientPresence(channel)
        channel.join()
        return { socket, presence }
      })
      yield* Effect.addFinalizer(() => Effect.sync(() => clients.forEach(({ socket }) => socket.disconnect())))
      const lists = () => clients.map(({ presence }) => presence.list((key) => key).sort())
      yield* eventually(Effect.sync(lists), (all) => all.every((list) => list.join() === "ada,bob,cy"))
      const cy = clients[2]!.socket as unknown as { conn: { _socket: import("node:net").Socket } }
      cy.conn._socket.resetAndDestroy()
      clients[2]!.socket.disconnect()
      yield* eventually(Effect.sync(lists), (all) => all.slice(0, 2).every((list) => list.join() === "ada,bob"))
    }))

  it.scopedLive("one key on two connections: one key, two metas; closing one leaves one", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Served)
      const open = (user: string | undefined) => {
        const socket = new Socket(server.socketUrl, { transport: WebSocket })
        socket.connect()
        const channel = socket.channel("room:1", user === undefined ? {} : { user })
        const presence = new ClientPresence(channel)
        channel.join()
        return { socket, presence }
      }
      const watcher = open(undefined)
      const tab1 = open("ada")
      const tab2 = open("ada")
      yield* Effect.addFinalizer(() => Effect.sync(() => [watcher, tab1, tab2].forEach(({ socket }) => socket.disconnect())))
      const metas = () => watcher.presence.list((key, { metas }) => `${key}:${metas.length}`)
      yield* eventually(Effect.sync(metas), (list) => list.join() === "ada:2")
      tab1.socket.disconnect()
      yield* eventually(Effect.sync(metas), (list) => list.join() === "ada:1")
    }))
})
