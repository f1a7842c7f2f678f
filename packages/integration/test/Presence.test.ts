import { Broker, ChannelBroadcaster, type ChannelConn, ChannelHandler, ChannelTest, Presence } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import * as Supervisor from "effect/Supervisor"
import * as TestClock from "effect/TestClock"
import fc from "fast-check"
import { type Channel, Presence as ClientPresence } from "phoenix"
import { socket as client, type ClientOptions } from "./utils/phoenixClient.js"
import { eventually } from "./utils/rawClient.js"
import { startServer } from "./utils/server.js"

interface JoinParams {
  /** The key to track under; none: the client only watches. */
  readonly user?: string
  readonly meta?: Presence.Meta
  /** How long `join` goes on after it tracked. */
  readonly pause?: Duration.DurationInput
  /** Refuse the join after tracking. */
  readonly refuse?: boolean
}

/**
 * Joins track `user` with `meta`, or push the state to a watcher; the events
 * `track`, `update`, `untrack`, `crash` and `leave` do what they say. The
 * socket id is the `id` connect parameter.
 */
const Tracked = ChannelHandler.layer({
  connect: (info) => Effect.succeed({ id: info.params["id"] }),
  join: (conn, event) =>
    Effect.gen(function*() {
      const { meta = {}, pause, refuse, user } = event.payload as JoinParams
      const presence = yield* Presence.Presence
      if (user !== undefined) yield* presence.track(conn, conn.topic, user, meta)
      else yield* presence.pushState(conn)
      if (pause !== undefined) yield* Effect.sleep(pause)
      return refuse === true ? conn.refuseJoin({ reason: "refused" }) : conn.allowJoin()
    }),
  incoming: (conn, event) =>
    Effect.gen(function*() {
      const presence = yield* Presence.Presence
      const { meta = {}, user = "" } = event.payload as JoinParams
      switch (event.event) {
        case "track":
          return yield* conn.reply(event, "ok", { ref: yield* presence.track(conn, conn.topic, user, meta) })
        case "update":
          return yield* presence.update(conn, conn.topic, user, meta).pipe(
            Effect.flatMap((ref) => conn.reply(event, "ok", { ref })),
            Effect.catchTag("NotTracked", () => conn.reply(event, "error", { reason: "not tracked" }))
          )
        case "bump":
          return yield* presence.update(conn, conn.topic, user, (current) => ({ ...current, n: Number(current["n"]) + 1 }))
            .pipe(Effect.orDie, Effect.zipRight(conn.reply(event, "ok")))
        case "untrack":
          return yield* Effect.zipRight(presence.untrack(conn, conn.topic, user), conn.reply(event, "ok"))
        case "crash":
          return yield* Effect.die("crash")
        case "leave":
          return yield* conn.leave
      }
    })
})

const TestLayer = Tracked.pipe(
  Layer.provideMerge(Presence.layer({ batchWindow: "1 second" })),
  Layer.provideMerge(ChannelTest.layer)
)

/** What a meta looks like without its refs. */
const content = ({ phx_ref: _ref, phx_ref_prev: _prev, ...meta }: Presence.TrackedMeta) => meta

/** A state as sorted data: keys, then metas by ref. */
const normal = (state: Presence.State) =>
  Object.fromEntries(
    Object.entries(state)
      .map(([key, { metas }]) => [key, [...metas].sort((a, b) => a.phx_ref.localeCompare(b.phx_ref))] as const)
      .sort(([a], [b]) => a.localeCompare(b))
  )

const counts = (state: Presence.State) =>
  Object.fromEntries(Object.entries(state).map(([key, { metas }]) => [key, metas.length]))

/**
 * The official client's `Presence`, fed everything a test socket received on
 * the channel's topic, in order: what the client would show.
 */
const clientView = (channel: ChannelTest.TestChannel): Presence.State => {
  const handlers = new Map<string, (payload: unknown) => void>()
  const fake = {
    on: (event: string, handler: (payload: unknown) => void) => handlers.set(event, handler),
    joinRef: () => channel.joinRef
  }
  const presence = new ClientPresence(fake as unknown as Channel)
  for (const message of ChannelTest.received(channel.socket)) {
    if (message._tag === "Reply" || message.topic !== channel.topic) continue
    if (message._tag === "Push" && message.joinRef !== channel.joinRef) continue
    handlers.get(message.event)?.(message.payload)
  }
  return Object.fromEntries(
    presence.list((key: string, { metas }: { metas: Array<Presence.TrackedMeta> }) => [key, { metas }])
  )
}

const diffsReceived = (socket: ChannelTest.TestSocket) =>
  ChannelTest.received(socket).filter((message) => message._tag === "Broadcast" && message.event === "presence_diff")
    .map((message) => (message as { readonly payload: unknown }).payload as Presence.Diff)

/** Waits (in real time) until the socket has received `count` diffs. */
const awaitDiffs = (socket: ChannelTest.TestSocket, count: number) =>
  eventually(Effect.sync(() => diffsReceived(socket)), (diffs) => diffs.length >= count)

const listOf = (topic: string) => Effect.flatMap(Presence.Presence, (presence) => presence.list(topic))

const request = (channel: ChannelTest.TestChannel, event: string, payload: JoinParams) =>
  Effect.flatMap(ChannelTest.push(channel, event, payload), (ref) =>
    ChannelTest.assertReply(channel, ref, "ok", undefined, { timeout: "1 second" }))

describe("Presence, with ChannelTest", () => {
  it.scoped("the joiner gets presence_state with itself in it; the others get the join one window later", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      expect(yield* ChannelTest.assertPush(watcher, "presence_state")).toEqual({})
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", meta: { status: "away" } })
      const state = yield* ChannelTest.assertPush(ada, "presence_state")
      expect(state).toEqual({ ada: { metas: [{ status: "away", phx_ref: expect.any(String) }] } })
      yield* ChannelTest.refuteBroadcast("room:1", "presence_diff", undefined, { timeout: "900 millis" })
      const diff = yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "200 millis" })
      expect(diff).toEqual({ joins: state, leaves: {} })
      yield* awaitDiffs(watcher.socket, 1)
      yield* awaitDiffs(ada.socket, 1)
      expect(clientView(watcher)).toEqual(state)
      expect(clientView(ada)).toEqual(state)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("200 joins within one window are one presence_diff, 200 leaves another; joins over three windows, three", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      const sockets: Array<ChannelTest.TestSocket> = []
      for (let i = 0; i < 200; i++) {
        const socket = yield* ChannelTest.connect()
        yield* ChannelTest.join(socket, "room:1", { user: `user${i}` })
        sockets.push(socket)
      }
      yield* TestClock.adjust("1 second")
      const [joined] = diffsReceived(watcher.socket)
      expect(Object.keys(joined!.joins)).toHaveLength(200)
      expect(joined!.leaves).toEqual({})
      yield* TestClock.adjust("5 seconds")
      expect(diffsReceived(watcher.socket)).toHaveLength(1)
      // Each member got one diff for the 200 joins: 200 messages in all, not 200².
      expect(sockets.map((socket) => diffsReceived(socket).length)).toEqual(sockets.map(() => 1))

      for (const socket of sockets) yield* ChannelTest.close(socket)
      yield* TestClock.adjust("1 second")
      const diffs = diffsReceived(watcher.socket)
      expect(diffs).toHaveLength(2)
      expect(Object.keys(diffs[1]!.leaves)).toHaveLength(200)
      expect(clientView(watcher)).toEqual({})

      const other = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:2")
      for (const window of [0, 1, 2]) {
        for (let i = 0; i < 50; i++) {
          yield* ChannelTest.join(yield* ChannelTest.connect(), "room:2", { user: `w${window}u${i}` })
        }
        yield* TestClock.adjust("1 second")
      }
      expect(diffsReceived(other.socket).map((diff) => Object.keys(diff.joins).length)).toEqual([50, 50, 50])
      expect(Object.keys(clientView(other))).toHaveLength(150)
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("an update diffs as a leave of the old meta plus a join of the new, with phx_ref_prev", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", meta: { n: 1 } })
      const first = ((yield* ChannelTest.assertPush(ada, "presence_state")) as Presence.State)["ada"]!.metas[0]!.phx_ref
      yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "2 seconds" })
      const { ref } = (yield* request(ada, "update", { user: "ada", meta: { n: 5 } })) as { ref: string }
      const diff = yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "2 seconds" })
      expect(diff).toEqual({
        joins: { ada: { metas: [{ n: 5, phx_ref: ref, phx_ref_prev: first }] } },
        leaves: { ada: { metas: [{ n: 1, phx_ref: first }] } }
      })
      yield* request(ada, "bump", { user: "ada" })
      const bumped = (yield* ChannelTest.assertBroadcast("room:1", "presence_diff", undefined, { timeout: "2 seconds" })) as Presence.Diff
      expect(bumped.joins["ada"]!.metas.map(content)).toEqual([{ n: 6 }])
      expect(bumped.joins["ada"]!.metas[0]!.phx_ref_prev).toBe(ref)
      yield* awaitDiffs(ada.socket, 3)
      expect(normal(clientView(ada))).toEqual(normal(yield* listOf("room:1")))
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("untrack leaves; untracking again changes nothing; updating then fails; tracking a key again updates it", () =>
    Effect.gen(function*() {
      const ada = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", meta: { n: 1 } })
      yield* request(ada, "track", { user: "ada", meta: { n: 2 } })
      const list = yield* listOf("room:1")
      expect(list["ada"]!.metas.map(content)).toEqual([{ n: 2 }])
      expect(list["ada"]!.metas[0]!.phx_ref_prev).toEqual(expect.any(String))
      yield* request(ada, "untrack", { user: "ada" })
      yield* request(ada, "untrack", { user: "ada" })
      expect(yield* listOf("room:1")).toEqual({})
      const ref = yield* ChannelTest.push(ada, "update", { user: "ada", meta: { n: 3 } })
      yield* ChannelTest.assertReply(ada, ref, "error", { reason: "not tracked" })
      yield* TestClock.adjust("1 second")
      expect(clientView(ada)).toEqual({})
    }).pipe(Effect.provide(TestLayer)))

  const ends: ReadonlyArray<{
    readonly how: string
    readonly end: (
      socket: ChannelTest.TestSocket,
      channel: ChannelTest.TestChannel
    ) => Effect.Effect<unknown, unknown, ChannelBroadcaster.ChannelBroadcaster>
  }> = [
    { how: "phx_leave", end: (_, channel) => ChannelTest.leave(channel) },
    { how: "a close frame", end: (socket) => ChannelTest.close(socket) },
    { how: "a lost transport", end: (socket) => ChannelTest.abort(socket) },
    { how: "a crash", end: (_, channel) => ChannelTest.push(channel, "crash") },
    { how: "a server-side leave", end: (_, channel) => ChannelTest.push(channel, "leave") },
    { how: "a duplicate join", end: (socket) => ChannelTest.join(socket, "room:1") },
    { how: "a heartbeat timeout", end: () => TestClock.adjust("6 seconds") },
    {
      how: "a server-side disconnect",
      end: () => Effect.flatMap(ChannelBroadcaster.ChannelBroadcaster, (broadcaster) => broadcaster.disconnect("ada-socket"))
    }
  ]

  it.scoped.each(ends)("an entry leaves when its channel ends by $how", ({ end }) =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      const socket = yield* ChannelTest.connect({ id: "ada-socket" }, { socket: { heartbeatTimeout: "5 seconds" } })
      const ada = yield* ChannelTest.join(socket, "room:1", { user: "ada" })
      yield* ChannelTest.assertPresence(watcher, { ada: 1 }, { timeout: "1 second" })
      yield* end(socket, ada)
      yield* ChannelTest.assertPresence(watcher, {}, { timeout: "2 seconds" })
      expect(clientView(watcher)).toEqual({})
      expect(yield* listOf("room:1")).toEqual({})
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a join refused after it tracked leaves nothing behind", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      yield* Effect.flip(ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "ada", refuse: true }))
      expect(yield* listOf("room:1")).toEqual({})
      yield* TestClock.adjust("2 seconds")
      expect(clientView(watcher)).toEqual({})
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("a joiner whose join goes on after it tracked still gets the diffs published meanwhile", () =>
    Effect.gen(function*() {
      // Joined by hand: `ChannelTest.join` would move the clock while it waits for the reply.
      const ada: ChannelTest.TestChannel = {
        _tag: "TestChannel",
        socket: yield* ChannelTest.connect(),
        topic: "room:1",
        joinRef: "slow",
        reply: {}
      }
      const ref = yield* ChannelTest.push(ada, "phx_join", { user: "ada", pause: "3 seconds" })
      yield* Effect.flatMap(Presence.Presence, (presence) => eventually(presence.list("room:1"), (list) => "ada" in list))
      yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "bob" })
      // The window closes at 1 s: the diff with bob goes out while ada's join runs, until 3 s.
      yield* TestClock.adjust("1500 millis")
      expect(ChannelTest.received(ada.socket)).toEqual([])
      yield* TestClock.adjust("2 seconds")
      yield* ChannelTest.assertReply(ada, ref, "ok")
      expect(counts(clientView(ada))).toEqual({ ada: 1, bob: 1 })
      yield* ChannelTest.assertPresence(ada, { ada: 1, bob: 1 })
    }).pipe(Effect.provide(TestLayer)))

  it.scoped("one key on two connections is two metas; a key is data, __proto__ included", () =>
    Effect.gen(function*() {
      const watcher = yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")
      const tab1 = yield* ChannelTest.connect()
      yield* ChannelTest.join(tab1, "room:1", { user: "__proto__" })
      yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1", { user: "__proto__" })
      yield* TestClock.adjust("1 second")
      expect(counts(clientView(watcher))).toEqual({ ["__proto__"]: 2 })
      yield* ChannelTest.close(tab1)
      yield* TestClock.adjust("1 second")
      expect(counts(clientView(watcher))).toEqual({ ["__proto__"]: 1 })
      expect(counts(yield* listOf("room:1"))).toEqual({ ["__proto__"]: 1 })
    }).pipe(Effect.provide(TestLayer)))

  it.scopedLive("a topic has a batching fiber only while changes wait for their window", () =>
    Effect.gen(function*() {
      const supervisor = yield* Supervisor.track
      const presence = yield* Presence.make({ batchWindow: "500 millis" }).pipe(Effect.supervised(supervisor))
      const live = Effect.map(supervisor.value, (fibers) => fibers.length)
      const idle = yield* live
      const scope = yield* Scope.make()
      const conn = { topic: "elsewhere", scope, push: () => Effect.void } as unknown as ChannelConn.ChannelConn
      for (let i = 0; i < 30; i++) yield* presence.track(conn, `room:${i % 10}`, `user${i}`, {})
      yield* eventually(live, (n) => n === idle + 10)
      yield* eventually(live, (n) => n === idle)
      yield* Scope.close(scope, Exit.void)
      expect(yield* presence.list("room:0")).toEqual({})
      yield* eventually(live, (n) => n === idle + 10)
      yield* eventually(live, (n) => n === idle)
    }).pipe(Effect.provide(Layer.merge(Broker.layerLocal, Presence.layerLocalStore))))
})

type Op =
  | { readonly _tag: "track"; readonly client: number; readonly user: number; readonly pause: number | null }
  | { readonly _tag: "update"; readonly client: number; readonly n: number }
  | { readonly _tag: "untrack"; readonly client: number }
  | { readonly _tag: "end"; readonly client: number; readonly how: "close" | "abort" | "leave" }
  | { readonly _tag: "wait"; readonly millis: number }
  | { readonly _tag: "observe" }

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    _tag: fc.constant("track" as const),
    client: fc.nat(7),
    user: fc.nat(3),
    pause: fc.option(fc.integer({ min: 0, max: 2000 }))
  }),
  fc.record({ _tag: fc.constant("update" as const), client: fc.nat(7), n: fc.nat(9) }),
  fc.record({ _tag: fc.constant("untrack" as const), client: fc.nat(7) }),
  fc.record({
    _tag: fc.constant("end" as const),
    client: fc.nat(7),
    how: fc.constantFrom("close" as const, "abort" as const, "leave" as const)
  }),
  fc.record({ _tag: fc.constant("wait" as const), millis: fc.integer({ min: 0, max: 1500 }) }),
  fc.constant({ _tag: "observe" as const })
)

interface Client {
  readonly socket: ChannelTest.TestSocket
  readonly joining: Fiber.Fiber<ChannelTest.TestChannel, ChannelTest.JoinRefused>
  readonly user: string
  /** The meta it is tracked with, or none after an untrack. */
  meta: { readonly n: number } | undefined
}

/**
 * Plays the operations, some joins running on while others go on; then the
 * server's list must be what the operations made, and every live client's
 * view (the official `Presence` fed what that client received) the list.
 */
const play = (ops: ReadonlyArray<Op>) =>
  Effect.gen(function*() {
    const observers = [yield* ChannelTest.join(yield* ChannelTest.connect(), "room:1")]
    const clients = new Map<number, Client>()
    const joined = (client: Client) => Fiber.join(client.joining)
    for (const step of ops) {
      const client = "client" in step ? clients.get(step.client) : undefined
      switch (step._tag) {
        case "track": {
          if (client !== undefined) {
            if (client.meta !== undefined) break
            yield* request(yield* joined(client), "track", { user: client.user, meta: { n: 0 } })
            client.meta = { n: 0 }
            break
          }
          const socket = yield* ChannelTest.connect()
          const user = `u${step.user}`
          const params = { user, meta: { n: 0 }, ...(step.pause === null ? {} : { pause: step.pause }) }
          const joining = yield* Effect.fork(ChannelTest.join(socket, "room:1", params))
          clients.set(step.client, { socket, joining, user, meta: { n: 0 } })
          break
        }
        case "update":
          if (client?.meta !== undefined) {
            yield* request(yield* joined(client), "update", { user: client.user, meta: { n: step.n } })
            client.meta = { n: step.n }
          }
          break
        case "untrack":
          if (client?.meta !== undefined) {
            yield* request(yield* joined(client), "untrack", { user: client.user })
            client.meta = undefined
          }
          break
        case "end":
          if (client !== undefined) {
            const channel = yield* joined(client)
            if (step.how === "close") yield* ChannelTest.close(client.socket)
            if (step.how === "abort") yield* ChannelTest.abort(client.socket)
            if (step.how === "leave") yield* ChannelTest.leave(channel)
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
    const live = [...observers]
    for (const client of clients.values()) live.push(yield* joined(client))
    yield* TestClock.adjust("2 seconds")

    const server = yield* listOf("room:1")
    const byN = (metas: ReadonlyArray<Presence.Meta>) => [...metas].sort((a, b) => Number(a["n"]) - Number(b["n"]))
    const model: Record<string, Array<Presence.Meta>> = {}
    for (const client of clients.values()) {
      if (client.meta !== undefined) (model[client.user] ??= []).push(client.meta)
    }
    expect(Object.fromEntries(Object.entries(server).map(([key, { metas }]) => [key, byN(metas.map(content))])))
      .toEqual(Object.fromEntries(Object.entries(model).map(([key, metas]) => [key, byN(metas)])))
    for (const channel of live) expect(normal(clientView(channel))).toEqual(normal(server))
  }).pipe(Effect.scoped, Effect.provide(TestLayer))

describe("Presence, the client's view never drifts", () => {
  it.effect("any interleaving of track/update/untrack/end: each client's replayed view is the server's list, which is the model's", () =>
    Effect.gen(function*() {
      const runtime = yield* Effect.runtime<never>()
      yield* Effect.promise(() =>
        fc.assert(fc.asyncProperty(fc.array(op, { maxLength: 40 }), (ops) => Runtime.runPromise(runtime)(play(ops))), {
          numRuns: 100
        })
      )
    }))
})

describe("Presence with the official Presence class, on real sockets", () => {
  const Served = Tracked.pipe(Layer.provide(Presence.layer({ batchWindow: "50 millis" })))

  /** A client in `room:1` with the official `Presence`; `list()` is its online list as `key:metas`. */
  const member = (url: string, params: JoinParams & { readonly id?: string } = {}, options: ClientOptions = {}) =>
    Effect.gen(function*() {
      const socket = yield* client(url, { params: params.id === undefined ? {} : { id: params.id }, ...options })
      const channel = socket.channel("room:1", params)
      const presence = new ClientPresence(channel)
      channel.join()
      const list = () =>
        presence.list((key: string, { metas }: { metas: Array<unknown> }) => `${key}:${metas.length}`).sort().join()
      return { socket, channel, list }
    })

  type Member = Effect.Effect.Success<ReturnType<typeof member>>

  const sees = (members: ReadonlyArray<Member>, expected: string) =>
    eventually(Effect.sync(() => members.map((m) => m.list())), (lists) => lists.every((list) => list === expected))

  /** Kills a client's TCP connection with a reset, no close frame. */
  const reset = (m: Member) =>
    Effect.sync(() => {
      const { conn } = m.socket as unknown as { conn: { _socket: import("node:net").Socket } }
      conn._socket.resetAndDestroy()
    })

  const noReconnect: ClientOptions = { reconnectAfterMs: () => 60_000, rejoinAfterMs: () => 60_000 }

  it.scopedLive("two, then three clients see each other; one killed by a TCP reset leaves the others' lists", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Served)
      const ada = yield* member(server.socketUrl, { user: "ada" })
      const bob = yield* member(server.socketUrl, { user: "bob" })
      yield* sees([ada, bob], "ada:1,bob:1")
      const cy = yield* member(server.socketUrl, { user: "cy" }, noReconnect)
      yield* sees([ada, bob, cy], "ada:1,bob:1,cy:1")
      yield* reset(cy)
      yield* sees([ada, bob], "ada:1,bob:1")
    }))

  it.scopedLive("one key on two connections: one key with two metas; closing one leaves one", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Served)
      const watcher = yield* member(server.socketUrl)
      const tab1 = yield* member(server.socketUrl, { user: "ada" })
      const tab2 = yield* member(server.socketUrl, { user: "ada" })
      yield* sees([watcher, tab1, tab2], "ada:2")
      tab1.socket.disconnect()
      yield* sees([watcher, tab2], "ada:1")
    }))

  const ways: ReadonlyArray<{
    readonly how: string
    readonly goAway: (m: Member, broadcaster: ChannelBroadcaster.Service) => Effect.Effect<void>
  }> = [
    { how: "leaving the channel", goAway: (m) => Effect.sync(() => void m.channel.leave()) },
    { how: "a close frame", goAway: (m) => Effect.sync(() => m.socket.disconnect()) },
    { how: "a TCP reset", goAway: reset },
    { how: "a heartbeat timeout", goAway: () => Effect.void },
    { how: "a server-side disconnect", goAway: (_, broadcaster) => broadcaster.disconnect("gone") }
  ]

  it.scopedLive.each(ways)("a client that goes away by $how leaves the others' lists", ({ goAway, how }) =>
    Effect.gen(function*() {
      const server = yield* startServer(Served, { heartbeatTimeout: "1 second" })
      const alive: ClientOptions = { heartbeatIntervalMs: 150 }
      const watcher = yield* member(server.socketUrl, {}, alive)
      const ada = yield* member(server.socketUrl, { user: "ada" }, alive)
      const silent: ClientOptions = how === "a heartbeat timeout" ? { heartbeatIntervalMs: 60_000 } : alive
      const gone = yield* member(server.socketUrl, { user: "gone", id: "gone" }, { ...noReconnect, ...silent })
      yield* sees([watcher, ada, gone], "ada:1,gone:1")
      yield* goAway(gone, server.broadcaster)
      yield* sees([watcher, ada], "ada:1")
    }))
})
