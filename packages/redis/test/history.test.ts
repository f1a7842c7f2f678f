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
import { check, nodePort, recoveringClient } from "./utils/recovery.js"
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
      yield* until(Effect.sync(() => client.ns().length), (n) => n >= 20, "the first broadcasts")
      yield* client.cut
      const before = client.ns().length
      yield* client.connect(nodePort(b))
      yield* sending.await
      yield* until(Effect.sync(() => client.ns().length), (n) => n >= 100, "every broadcast", 10_000)
      const elapsed = Date.now() - started
      expect(client.ns()).toEqual(range(0, 100))
      expect(check(client.seen, range(0, 100))).toEqual([])
      const joins = client.seen.filter((entry) => entry._tag === "Joined")
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
          const client = recoveringClient(topic)
          yield* client.connect(nodePort(a))
          yield* broadcast(b, topic, range(0, 10))
          yield* until(Effect.sync(() => client.ns().length), (n) => n === 10, "the first broadcasts")
          yield* killSubscriber(a)
          yield* broadcast(b, topic, range(10, 30))
          if (after) {
            // Once the subscriber is back (a join waits for its subscription), one more.
            yield* until(Effect.sync(() => subscriberConnections(a).length), (n) => n === 1, "the subscriber back")
            yield* broadcast(b, topic, [30])
          }
          const total = after ? 31 : 30
          yield* until(Effect.sync(() => client.ns().length), (n) => n === total, "every broadcast", 10_000)
          expect(client.ns()).toEqual(range(0, total))
          expect(check(client.seen, range(0, total))).toEqual([])
          // No rejoin: the node filled the gap, the channel saw none.
          expect(client.seen.filter((entry) => entry._tag === "Joined")).toHaveLength(1)
        })
    )
  }

  it.scopedLive("a position older than the history recovers nothing: _recovered false, and live broadcasts from the reply's position", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes({ "rooms:*": { size: 10, ttl: "1 minute" } })
      const topic = "rooms:old"
      const client = recoveringClient(topic)
      yield* client.connect(nodePort(a))
      yield* broadcast(b, topic, range(0, 5))
      yield* until(Effect.sync(() => client.ns().length), (n) => n === 5, "the first broadcasts")
      yield* client.cut
      yield* broadcast(a, topic, range(5, 55))
      yield* client.connect(nodePort(b))
      yield* broadcast(a, topic, [55])
      yield* until(Effect.sync(() => client.ns().length), (n) => n === 6, "the live broadcast")
      expect(client.ns()).toEqual([0, 1, 2, 3, 4, 55])
      const rejoin = client.seen.filter((entry) => entry._tag === "Joined")[1]
      expect(rejoin).toMatchObject({ recovered: false, position: { offset: 55 } })
      expect(check(client.seen, range(0, 56))).toEqual([])
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
          const client = recoveringClient(topic)
          yield* client.connect(nodePort(a))
          yield* broadcast(b, topic, range(0, 10))
          yield* until(Effect.sync(() => client.ns().length), (n) => n === 10, "the first broadcasts")
          yield* client.cut
          yield* broadcast(b, topic, range(10, 15))
          const epoch = client.last()!.epoch
          yield* readable(a, topic).pipe(
            Effect.flatMap(() => until(a.broker.recover(topic, undefined), (r) => r?.position?.offset === 15, "15 stored"))
          )
          yield* redis.stop
          yield* redis.start
          yield* readable(b, topic)
          yield* client.connect(nodePort(b))
          yield* broadcast(a, topic, [15])
          const rejoin = client.seen.filter((entry) => entry._tag === "Joined")[1]!
          if (persistent) {
            yield* until(Effect.sync(() => client.ns().length), (n) => n === 16, "the missed and the live broadcasts")
            expect(rejoin).toMatchObject({ recovered: true, position: { epoch, offset: 10 } })
            expect(client.ns()).toEqual(range(0, 16))
            expect(check(client.seen, range(0, 16))).toEqual([])
          } else {
            yield* until(Effect.sync(() => client.ns().length), (n) => n === 11, "the live broadcast")
            expect(rejoin.recovered).toBe(false)
            expect(rejoin.position.epoch).not.toBe(epoch)
            expect(rejoin.position.offset).toBe(0)
            expect(client.ns()).toEqual([...range(0, 10), 15])
            expect(client.last()).toEqual({ epoch: rejoin.position.epoch, offset: 1 })
          }
        })
    )
  }
})
