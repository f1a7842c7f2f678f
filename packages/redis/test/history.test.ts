/**
 * Missed-message recovery across nodes: histories kept in Redis, clients
 * (the official phoenix client) cut off abruptly on one node and rejoining
 * on the other with the last position they saw.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { execFileSync } from "node:child_process"
import * as Node from "./utils/node.js"
import { until } from "./utils/members.js"
import { check, nodePort, received, recoveringClient } from "./utils/recovery.js"
import { redisServerWith } from "./utils/redis.js"

const url = "redis://127.0.0.1:6379"

/** Two nodes on one prefix, keeping the histories of `rooms:*`. */
const nodes = (histories: Node.Histories, options: { readonly url?: string } = {}) =>
  Effect.gen(function*() {
    const prefix = Node.uniquePrefix("history")
    const start = () => Node.start({ url: options.url ?? url, prefix, connectTimeout: "1 second" }, histories)
    return [yield* start(), yield* start()] as const
  })

/** Broadcasts `{ n }` for each n of `ns` from `node`, in order. */
const broadcast = (node: Node.TestNode, topic: string, ns: ReadonlyArray<number>) =>
  Effect.forEach(ns, (n) => node.broadcaster.broadcast(topic, "shout", { n }), { discard: true }).pipe(Effect.orDie)

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i)

/** Waits until the node's broker reads the topic's history (Redis is reachable again). */
const readable = (node: Node.TestNode, topic: string): Effect.Effect<void, never, Scope.Scope> =>
  until(node.broker.recover(topic, undefined), (recovery) => recovery?.position !== undefined, "a readable history", 10_000)

/** The ids of a node's connections to Redis that have subscriptions. */
const subscriberConnections = (node: Node.TestNode) =>
  execFileSync("redis-cli", ["-p", "6379", "client", "list"], { encoding: "utf8" }).split("\n")
    .filter((client) => client.includes(` name=${node.node.nodeId} `) && / sub=[1-9]/.test(client))
    .map((client) => client.match(/^id=(\d+) /)![1]!)

/** Kills a node's subscriber connection at Redis, as a network fault would. */
const killSubscriber = (node: Node.TestNode) =>
  Effect.sync(() => {
    const [id] = subscriberConnections(node)
    if (id === undefined) throw new Error(`no subscriber connection of ${node.node.nodeId}`)
    execFileSync("redis-cli", ["-p", "6379", "client", "kill", "id", id])
  })

/** A client of `topic` on `a` that has seen the broadcasts 0 to `count - 1`, sent from `b`. */
const following = (a: Node.TestNode, b: Node.TestNode, topic: string, count: number) =>
  Effect.gen(function*() {
    const client = recoveringClient(topic)
    yield* client.connect(nodePort(a))
    yield* broadcast(b, topic, range(0, count))
    yield* received(client, count)
    return client
  })

describe("RedisBroker histories", () => {
  it.scopedLive("a client cut off while 100 broadcasts flow recovers every one, once, in order, on the other node", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes({ "rooms:*": { size: 200, ttl: "1 minute" } })
      const topic = "rooms:cut"
      const client = recoveringClient(topic)
      yield* client.connect(nodePort(a))
      const started = Date.now()
      // Paced, so that the cut and the rejoin happen while they flow.
      const sending = yield* Effect.fork(Effect.forEach(
        range(0, 100),
        (n) => Effect.zipRight(broadcast(b, topic, [n]), Effect.sleep("2 millis")),
        { discard: true }
      ))
      yield* received(client, 20, { atLeast: true })
      yield* client.cut
      const before = client.ns().length
      yield* client.connect(nodePort(b))
      yield* sending.await
      yield* received(client, 100, { atLeast: true, timeout: 10_000 })
      const elapsed = Date.now() - started
      expect(client.ns()).toEqual(range(0, 100))
      expect(check(client.seen, range(0, 100))).toEqual([])
      const joins = client.joins()
      expect(joins.map(({ recovered }) => recovered)).toEqual([false, true])
      expect(before).toBeLessThan(100)
      yield* Effect.logInfo(`cut after ${before} of 100, all 100 in ${elapsed} ms`)
    }))

  for (const after of [false, true]) {
    it.scopedLive(
      `a node whose subscriber connection dropped delivers what it missed from the history, in order${
        after ? ", before a newer broadcast" : ", with no newer broadcast"
      }`,
      () =>
        Effect.gen(function*() {
          const [a, b] = yield* nodes({ "rooms:*": { size: 100, ttl: "1 minute" } })
          const topic = "rooms:gap"
          const client = yield* following(a, b, topic, 10)
          yield* killSubscriber(a)
          yield* broadcast(b, topic, range(10, 30))
          if (after) {
            // Once the subscriber is back (a join waits for its subscription), one more.
            yield* until(Effect.sync(() => subscriberConnections(a).length), (n) => n === 1, "the subscriber back")
            yield* broadcast(b, topic, [30])
          }
          const total = after ? 31 : 30
          yield* received(client, total, { timeout: 10_000 })
          expect(client.ns()).toEqual(range(0, total))
          expect(check(client.seen, range(0, total))).toEqual([])
          // No rejoin: the node filled the gap, the channel saw none.
          expect(client.joins()).toHaveLength(1)
        })
    )
  }

  it.scopedLive("a position older than the history recovers nothing: _recovered false, and live broadcasts from the reply's position", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes({ "rooms:*": { size: 10, ttl: "1 minute" } })
      const topic = "rooms:old"
      const client = yield* following(a, b, topic, 5)
      yield* client.cut
      yield* broadcast(a, topic, range(5, 55))
      yield* until(a.broker.recover(topic, undefined), (recovery) => recovery?.position?.offset === 55, "55 stored")
      yield* client.connect(nodePort(b))
      yield* broadcast(a, topic, [55])
      yield* received(client, 6)
      expect(client.ns()).toEqual([0, 1, 2, 3, 4, 55])
      const rejoin = client.joins()[1]
      expect(rejoin).toMatchObject({ recovered: false, position: { offset: 55 } })
      expect(check(client.seen, range(0, 56))).toEqual([])
    }))

  it.scopedLive("a missed broadcast past its ttl recovers nothing, though the stream lives on", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes({ "rooms:*": { size: 1000, ttl: "300 millis" } })
      const topic = "rooms:ttl"
      const client = yield* following(a, b, topic, 1)
      yield* client.cut
      const last = client.last()
      // Broadcasts keep the stream alive (each one refreshes its expiry) while the first missed one ages.
      let n = 1
      yield* until(
        Effect.suspend(() => Effect.zipRight(broadcast(b, topic, [n++]), a.broker.recover(topic, last))),
        (recovery) => recovery?.position !== undefined && recovery.missed === undefined,
        "the first missed broadcast expired"
      )
      yield* client.connect(nodePort(b))
      yield* broadcast(b, topic, [n])
      yield* received(client, 2)
      expect(client.ns()).toEqual([0, n])
      expect(client.joins()[1]).toMatchObject({ recovered: false, position: { offset: n } })
      expect(check(client.seen, range(0, n + 1))).toEqual([])
    }))

  for (const persistent of [true, false]) {
    it.scopedLive(
      persistent
        ? "a Redis restarted with its data keeps the history: the client recovers"
        : "a Redis restarted empty loses the history: a new epoch, _recovered false",
      () =>
        Effect.gen(function*() {
          const redis = yield* redisServerWith({ persistent })
          const [a, b] = yield* nodes({ "rooms:*": { size: 100, ttl: "1 minute" } }, { url: redis.url })
          const topic = "rooms:restart"
          const client = yield* following(a, b, topic, 10)
          yield* client.cut
          yield* broadcast(b, topic, range(10, 15))
          const epoch = client.last()!.epoch
          yield* until(a.broker.recover(topic, undefined), (r) => r?.position?.offset === 15, "15 stored")
          yield* redis.stop
          yield* redis.start
          yield* readable(b, topic)
          yield* client.connect(nodePort(b))
          yield* broadcast(a, topic, [15])
          const rejoin = client.joins()[1]!
          if (persistent) {
            yield* received(client, 16)
            expect(rejoin).toMatchObject({ recovered: true, position: { epoch, offset: 10 } })
            expect(client.ns()).toEqual(range(0, 16))
            expect(check(client.seen, range(0, 16))).toEqual([])
          } else {
            yield* received(client, 11)
            expect(rejoin.recovered).toBe(false)
            expect(rejoin.position.epoch).not.toBe(epoch)
            expect(rejoin.position.offset).toBe(0)
            expect(client.ns()).toEqual([...range(0, 10), 15])
            expect(client.last()).toEqual({ epoch: rejoin.position.epoch, offset: 1 })
          }
        })
    )
  }

  it.scopedLive("while Redis is unreachable, a broadcast on a topic with a history is dropped and counted, even on its own node", () =>
    Effect.gen(function*() {
      const redis = yield* redisServerWith({ persistent: true })
      const [a, b] = yield* nodes({ "rooms:*": { size: 100, ttl: "1 minute" } }, { url: redis.url })
      const topic = "rooms:down"
      const client = yield* following(a, b, topic, 3)
      yield* redis.stop
      yield* until(a.broker.recover(topic, undefined), (recovery) => recovery?.position === undefined, "Redis unreachable")
      const dropped = (yield* a.node.stats).dropped
      yield* broadcast(a, topic, [100])
      // At once, or when the publish fails (Redis's going not yet noticed).
      yield* until(a.node.stats, (stats) => stats.dropped === dropped + 1, "the broadcast dropped")
      yield* redis.start
      yield* readable(a, topic)
      yield* broadcast(a, topic, [3])
      yield* received(client, 4)
      // The dropped one reached no one, the sender's node included, and the stream goes on without a gap.
      expect(client.ns()).toEqual(range(0, 4))
      expect(check(client.seen, range(0, 4))).toEqual([])
      expect(client.joins()).toHaveLength(1)
    }))
})
