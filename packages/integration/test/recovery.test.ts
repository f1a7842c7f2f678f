/**
 * Recovery on the raw wire (V2 frames): positions in the broadcasts' `ref`,
 * a rejoin with `_position` replayed in order and without duplicates (even
 * when broadcasts are published during the join), the handler not seeing
 * the protocol's param, binary payloads refused on a topic with a history,
 * and topics without one, and presence diffs, unchanged.
 */
import { ChannelBroadcaster, ChannelHandler, ChannelHistory, Presence } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as LongPoll from "./utils/longPoll.js"
import { connect, eventually, type RawClient, type V2 } from "./utils/rawClient.js"
import { startServer, type TestServer } from "./utils/server.js"

const topic = "rooms:1"

const broadcaster = ChannelBroadcaster.layerLocal.pipe(
  Layer.provide(ChannelHistory.layer({ "rooms:*": { size: 100, ttl: "1 minute" } }))
)

const plain = ChannelHandler.layer({ join: (conn) => Effect.succeed(conn.allowJoin()) })

let refs = 0
/** Joins `topic` with `params`: the reply's response. */
const join = (client: RawClient, params: object, on = topic) =>
  Effect.gen(function*() {
    const ref = `j${++refs}`
    yield* client.send([ref, ref, on, "phx_join", params])
    const reply = yield* client.next((frame) => frame[1] === ref)
    expect(reply[3]).toBe("phx_reply")
    const payload = reply[4] as { readonly status: string; readonly response: Record<string, unknown> }
    expect(payload.status).toBe("ok")
    return payload.response
  })

const publish = (server: TestServer, from: number, to: number, on = topic) =>
  Effect.forEach(
    Array.from({ length: to - from + 1 }, (_, i) => from + i),
    (n) => server.broadcaster.broadcast(on, "seq", { n }),
    { discard: true }
  )

/** The broadcasts of `event` received so far (up to a heartbeat's reply). */
const broadcasts = (client: RawClient, event = "seq") =>
  Effect.map(client.drain, (frames) => frames.filter((frame) => frame[3] === event))

const at = (epoch: string, offset: number) => `${epoch}:${offset}`
const epochOf = (position: unknown) => String(position).slice(0, String(position).lastIndexOf(":"))
const seq = (epoch: string, from: number, to: number, on = topic): Array<V2> =>
  Array.from({ length: to - from + 1 }, (_, i) => [null, at(epoch, from + i), on, "seq", { n: from + i }])

/**
 * 100 broadcasts of `bytes` each on `topic` (a probe joins first, for the
 * history's epoch, and leaves before them, as it would not take them fast
 * enough over long-poll): the epoch.
 */
const largeHistory = (server: TestServer, bytes: number) =>
  Effect.gen(function*() {
    const probe = yield* connect(server.socketUrl)
    const epoch = epochOf((yield* join(probe, {}))["_position"])
    yield* probe.send([null, "l0", topic, "phx_leave", {}])
    yield* probe.next((frame) => frame[1] === "l0")
    const data = "x".repeat(bytes)
    for (let n = 1; n <= 100; n++) yield* server.broadcaster.broadcast(topic, "seq", { n, data })
    return { epoch, data }
  })

describe("recovery on the wire", () => {
  it.scopedLive("positions in the refs, then a rejoin from one of them gets what it missed, in order, then live ones", () =>
    Effect.gen(function*() {
      const server = yield* startServer(plain, { broadcaster })
      const ada = yield* connect(server.socketUrl)
      const first = yield* join(ada, {})
      expect(first["_recovered"]).toBe(false)
      const epoch = epochOf(first["_position"])
      expect(first["_position"]).toBe(at(epoch, 0))
      yield* publish(server, 1, 5)
      expect(yield* broadcasts(ada)).toEqual(seq(epoch, 1, 5))

      yield* publish(server, 6, 10)
      const bob = yield* connect(server.socketUrl)
      expect(yield* join(bob, { _position: at(epoch, 5) })).toEqual({ _position: at(epoch, 5), _recovered: true })
      yield* publish(server, 11, 11)
      expect(yield* broadcasts(bob)).toEqual(seq(epoch, 6, 11))
      // Nothing missed: recovered, nothing replayed.
      const cleo = yield* connect(server.socketUrl)
      expect(yield* join(cleo, { _position: at(epoch, 11) })).toEqual({ _position: at(epoch, 11), _recovered: true })
      expect(yield* broadcasts(cleo)).toEqual([])
    }))

  it.scopedLive("positions another epoch's, or in the future, or not positions: recovered false, from the top, nothing replayed", () =>
    Effect.gen(function*() {
      const server = yield* startServer(plain, { broadcaster })
      yield* publish(server, 1, 3)
      const probe = yield* connect(server.socketUrl)
      const epoch = epochOf((yield* join(probe, {}))["_position"])
      for (const position of [at("other", 1), at(epoch, 4), "garbage", 7]) {
        const client = yield* connect(server.socketUrl)
        expect(yield* join(client, { _position: position })).toEqual({ _position: at(epoch, 3), _recovered: false })
        expect(yield* broadcasts(client)).toEqual([])
      }
    }))

  it.scopedLive("broadcasts published while the join runs: each exactly once, after the reply, in order", () =>
    Effect.gen(function*() {
      const entered = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const handler = ChannelHandler.layer({
        join: (conn, event) =>
          (event.payload as { readonly slow?: boolean }).slow === true
            ? Effect.as(Effect.zipRight(Deferred.succeed(entered, undefined), Deferred.await(release)), conn.allowJoin())
            : Effect.succeed(conn.allowJoin())
      })
      const server = yield* startServer(handler, { broadcaster })
      const probe = yield* connect(server.socketUrl)
      const epoch = epochOf((yield* join(probe, {}))["_position"])
      yield* publish(server, 1, 3)

      const ada = yield* connect(server.socketUrl)
      yield* ada.send(["1", "1", topic, "phx_join", { slow: true, _position: at(epoch, 1) }])
      yield* Deferred.await(entered)
      // In the history (to replay) and on their way to the channel (subscribed before `join` ran).
      yield* publish(server, 4, 8)
      yield* Deferred.succeed(release, undefined)
      const reply = yield* ada.next((frame) => frame[1] === "1")
      expect(reply[4]).toEqual({ status: "ok", response: { _position: at(epoch, 1), _recovered: true } })
      yield* publish(server, 9, 9)
      expect(yield* broadcasts(ada)).toEqual(seq(epoch, 2, 9))
    }))

  it.scopedLive.each(["server", "longpoll"] as const)("a replay larger than outboundBufferLimit is paced, not a slow client: all of it, in order, then live ones (%s)", (transport) =>
    Effect.gen(function*() {
      // 100 broadcasts of 20 KB: 2 MB to replay, twice the default bound of 1 MiB.
      const server = yield* startServer(plain, { broadcaster, transport })
      const { data, epoch } = yield* largeHistory(server, 20_000)
      const ada = yield* connect(server.socketUrl)
      expect(yield* join(ada, { _position: at(epoch, 0) })).toEqual({ _position: at(epoch, 0), _recovered: true })
      yield* server.broadcaster.broadcast(topic, "seq", { n: 101, data })
      const received: Array<V2> = []
      while (received.length < 101) received.push(yield* ada.next((frame) => frame[3] === "seq", 10_000))
      expect(received.map((frame) => [frame[1], (frame[4] as { n: number }).n])).toEqual(
        Array.from({ length: 101 }, (_, i) => [at(epoch, i + 1), i + 1])
      )
      // Still connected, and served.
      yield* join(ada, {}, "plain:1")
    }))

  it.scopedLive("a long-poll client that stops polling during its replay is ended by its idle time, the replay with it", () =>
    Effect.gen(function*() {
      // Over long-poll, what is unsent is what the client has not polled; the
      // session ends when not polled for 1.5 windows (a WebSocket client that
      // takes nothing is dropped after heartbeatTimeout).
      const server = yield* startServer(plain, {
        broadcaster,
        transport: "longpoll",
        longPoll: { secret: "test-secret", window: "1 second" }
      })
      // 100 broadcasts of 40 KB: at least three turns of the 1 MiB bound.
      const { epoch } = yield* largeHistory(server, 40_000)
      const endpoint = `${server.httpUrl}/longpoll?vsn=2.0.0`
      const opened = yield* LongPoll.request(endpoint)
      const url = `${endpoint}&token=${encodeURIComponent(opened.token!)}`
      yield* LongPoll.request(url, {
        method: "POST",
        headers: { "content-type": "application/x-ndjson" },
        body: JSON.stringify(["1", "1", topic, "phx_join", { _position: at(epoch, 0) }])
      })
      // One poll: the reply and the replay's first turn (at most the bound), then no more.
      const first = yield* LongPoll.request(url)
      const start = Date.now()
      const taken = (first.messages ?? []).map((message) => JSON.parse(message) as V2)
      expect(taken[0]?.[3]).toBe("phx_reply")
      const replayed = taken.filter((frame) => frame[3] === "seq").length
      expect(replayed).toBeGreaterThan(0)
      expect(replayed * 40_000).toBeLessThanOrEqual(1024 * 1024)
      // Still a connection meanwhile: a replay waiting for its client is no slow client.
      expect(yield* server.broadcaster.connected).toBe(2)
      yield* eventually(server.broadcaster.connected, (n) => n === 1, 5000)
      expect(Date.now() - start).toBeGreaterThanOrEqual(1400)
      expect((yield* LongPoll.request(url)).status).toBe(410)
    }))

  it.scopedLive("the handler's join does not see `_position`; the app's response keeps its own fields", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const handler = ChannelHandler.layer({
        join: (conn, event) => Effect.sync(() => seen.push(event.payload)).pipe(Effect.as(conn.allowJoin({ welcome: true })))
      })
      const server = yield* startServer(handler, { broadcaster })
      const ada = yield* connect(server.socketUrl)
      const response = yield* join(ada, { user: "ada", _position: "e:0" })
      expect(seen).toEqual([{ user: "ada" }])
      expect(response).toMatchObject({ welcome: true, _recovered: false })
    }))

  it.scopedLive("a binary broadcast on a topic with a history fails with UnrecoverablePayload, sends nothing, takes no position", () =>
    Effect.gen(function*() {
      const server = yield* startServer(plain, { broadcaster })
      const ada = yield* connect(server.socketUrl)
      const epoch = epochOf((yield* join(ada, {}))["_position"])
      const error = yield* Effect.flip(server.broadcaster.broadcast(topic, "bin", new Uint8Array([1, 2, 3])))
      expect(error._tag).toBe("UnrecoverablePayload")
      expect(error).toMatchObject({ topic, event: "bin" })
      yield* publish(server, 1, 1)
      expect(yield* ada.drain).toEqual(seq(epoch, 1, 1))
      // A topic without a history takes binary as before.
      yield* join(ada, {}, "plain:1")
      yield* server.broadcaster.broadcast("plain:1", "bin", new Uint8Array([1, 2, 3]))
      expect((yield* ada.nextBinary()).length).toBeGreaterThan(3)
    }))

  it.scopedLive("a topic without a history: the reply and the broadcasts are as before (ref null), `_position` passed on", () =>
    Effect.gen(function*() {
      const seen: Array<unknown> = []
      const handler = ChannelHandler.layer({
        join: (conn, event) => Effect.sync(() => seen.push(event.payload)).pipe(Effect.as(conn.allowJoin()))
      })
      const server = yield* startServer(handler, { broadcaster })
      const ada = yield* connect(server.socketUrl)
      expect(yield* join(ada, { _position: "e:1" }, "plain:1")).toEqual({})
      expect(seen).toEqual([{ _position: "e:1" }])
      yield* publish(server, 1, 2, "plain:1")
      expect(yield* broadcasts(ada)).toEqual([
        [null, null, "plain:1", "seq", { n: 1 }],
        [null, null, "plain:1", "seq", { n: 2 }]
      ])
    }))

  it.scopedLive("presence diffs on a topic with a history have no position, and take no offset", () =>
    Effect.gen(function*() {
      const handler = ChannelHandler.layer({
        join: (conn, event) =>
          Effect.gen(function*() {
            const user = (event.payload as { readonly user?: string }).user
            const presence = yield* Presence.Presence
            if (user !== undefined) yield* presence.track(conn, event.topic, user, {})
            return conn.allowJoin()
          })
      }).pipe(Layer.provide(Presence.layer({ batchWindow: "10 millis" })))
      const server = yield* startServer(handler, { broadcaster })
      const ada = yield* connect(server.socketUrl)
      const epoch = epochOf((yield* join(ada, {}))["_position"])
      const bob = yield* connect(server.socketUrl)
      yield* join(bob, { user: "bob" })
      const diff = yield* ada.next((frame) => frame[3] === "presence_diff")
      expect(diff[0]).toBeNull()
      expect(diff[1]).toBeNull()
      yield* publish(server, 1, 1)
      expect(yield* broadcasts(ada)).toEqual(seq(epoch, 1, 1))
    }))
})
