/**
 * Redis stops and comes back (a new `redis-server` on the same port, empty):
 * delivery within a node goes on meanwhile, publishing does not block, and
 * afterwards every node is back in the cluster without a restart.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import { metrics } from "../src/internal/metrics.js"
import * as Node from "./utils/node.js"
import * as Client from "./utils/phoenixClient.js"
import { redisServer } from "./utils/redis.js"
import { eventually, member, shouts, until } from "./utils/members.js"

describe("Redis outage", () => {
  it.scopedLive("nodes reconnect, resubscribe and broadcast again after Redis restarts", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const options = { url: redis.url, prefix: Node.uniquePrefix("outage"), heartbeatInterval: "100 millis", nodeTimeout: "1 second" } as const
      const a = yield* Node.start(options)
      const b = yield* Node.start(options)
      const onA = yield* member(a, "rooms:r")
      const onB = yield* member(b, "rooms:r")
      yield* Client.push(onA.channel, "shout", { n: "before" })
      yield* eventually(() => shouts(onB.seen).length === 1, "the broadcast before the outage")
      yield* until(a.cluster.connected, (count) => count === 2, "the cluster count")

      yield* redis.stop
      // Within a node, delivery goes on; to the other node, broadcasts are dropped and counted.
      yield* Client.push(onA.channel, "shout", { n: "during" })
      yield* eventually(() => shouts(onA.seen).length === 2, "the local broadcast during the outage")
      // Publishing never waits for Redis: 10,000 broadcasts while it is down return at once.
      yield* Effect.timeoutFail(
        Effect.forEach(Array.from({ length: 10_000 }, (_, n) => n), (n) => a.broadcaster.broadcast("rooms:r", "burst", { n }), { discard: true }),
        { duration: "5 seconds", onTimeout: () => new Error("publishing blocked while Redis was down") }
      )
      const down = yield* a.node.stats
      expect(down.dropped).toBeGreaterThanOrEqual(10_001)
      expect((yield* Effect.either(a.cluster.connected))._tag).toBe("Left")
      // A topic first joined while Redis is down is subscribed once it is back.
      const lateOnA = yield* member(a, "rooms:late")
      const lateOnB = yield* member(b, "rooms:late")

      yield* redis.start
      // Until both nodes have reconnected, a broadcast may be dropped: send until one arrives.
      yield* Effect.gen(function*() {
        for (let attempt = 0; attempt < 200; attempt++) {
          yield* b.broadcaster.broadcast("rooms:late", "shout", { n: `probe-${attempt}` })
          yield* Effect.sleep("50 millis")
          if (shouts(lateOnA.seen).length > 0) return
        }
        return yield* Effect.dieMessage("no broadcast crossed after Redis came back")
      })
      yield* eventually(() => shouts(lateOnB.seen).length > 0, "b's own probes")
      // Both directions, in order, on the topic subscribed before the outage too.
      const before = shouts(onA.seen).length
      for (let n = 0; n < 20; n++) yield* b.broadcaster.broadcast("rooms:r", "shout", { n })
      for (let n = 0; n < 20; n++) yield* Client.push(onA.channel, "shout", { m: n })
      yield* eventually(() => shouts(onA.seen).length === before + 40, "40 broadcasts on a")
      const expectedFromB = Array.from({ length: 20 }, (_, n) => ({ n }))
      const expectedFromA = Array.from({ length: 20 }, (_, n) => ({ m: n }))
      const after = shouts(onA.seen).slice(before)
      expect(after.filter((p) => "n" in (p as object))).toEqual(expectedFromB)
      expect(after.filter((p) => "m" in (p as object))).toEqual(expectedFromA)
      yield* eventually(() => shouts(onB.seen).filter((p) => "m" in (p as object)).length === 20, "a's 20 on b")
      expect(shouts(onB.seen).filter((p) => "m" in (p as object))).toEqual(expectedFromA)
      // The count is back too: the new server learns both nodes from their heartbeats.
      yield* until(b.cluster.connected, (count) => count === 4, "the cluster count after the restart")
    }), 60_000)

  it.scopedLive("a node started while Redis is down serves alone, then joins the cluster when Redis comes up", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      yield* redis.stop
      const options = { url: redis.url, prefix: Node.uniquePrefix("late"), connectTimeout: "200 millis" } as const
      const a = yield* Node.start(options)
      const onA = yield* member(a, "rooms:r")
      const alsoOnA = yield* member(a, "rooms:r")
      yield* Client.push(onA.channel, "shout", { n: "alone" })
      yield* eventually(() => shouts(alsoOnA.seen).length === 1, "local delivery without Redis")

      yield* redis.start
      const b = yield* Node.start(options)
      const onB = yield* member(b, "rooms:r")
      // a subscribes its topic once it reaches Redis.
      yield* Effect.gen(function*() {
        for (let attempt = 0; attempt < 200; attempt++) {
          yield* b.broadcaster.broadcast("rooms:r", "shout", { n: attempt })
          yield* Effect.sleep("50 millis")
          if (shouts(onA.seen).length > 1) return
        }
        return yield* Effect.dieMessage("a never joined the cluster")
      })
      yield* Client.push(onA.channel, "shout", { n: "joined" })
      yield* eventually(() => shouts(onB.seen).some((payload) => (payload as { n: unknown }).n === "joined"), "a's shout on b")
    }), 60_000)

  it.scopedLive("a Redis that stops answering: publishes waiting for it are bounded, the rest dropped, then all flows again", () =>
    Effect.gen(function*() {
      const redis = yield* redisServer
      const options = { url: redis.url, prefix: Node.uniquePrefix("frozen"), maxPendingPublishes: 1000 } as const
      const a = yield* Node.start(options)
      const b = yield* Node.start(options)
      const onA = yield* member(a, "rooms:f")
      const onB = yield* member(b, "rooms:f")

      const droppedBefore = (yield* Metric.value(metrics.dropped)).count
      yield* redis.signal("SIGSTOP")
      yield* Effect.addFinalizer(() => redis.signal("SIGCONT"))
      // The connection stays open, so these are written and wait for Redis: at most 1,000 of them.
      yield* Effect.timeoutFail(
        Effect.forEach(Array.from({ length: 5000 }, (_, n) => n), (n) => a.broadcaster.broadcast("rooms:f", "burst", { n }), { discard: true }),
        { duration: "5 seconds", onTimeout: () => new Error("publishing blocked while Redis was frozen") }
      )
      expect((yield* a.node.stats).dropped).toBe(4000)
      // The metric counts them too (other tests in this process may add to it).
      expect((yield* Metric.value(metrics.dropped)).count - droppedBefore).toBeGreaterThanOrEqual(4000)
      // Local delivery went on meanwhile.
      yield* eventually(() => onA.seen.filter(({ event }) => event === "burst").length === 5000, "5,000 local deliveries")

      yield* redis.signal("SIGCONT")
      // The 1,000 that waited reach b, in order, and nothing more of the burst.
      yield* eventually(() => onB.seen.filter(({ event }) => event === "burst").length === 1000, "the 1,000 that waited", 10_000)
      const received = onB.seen.filter(({ event }) => event === "burst").map(({ payload }) => (payload as { n: number }).n)
      expect(received).toEqual(Array.from({ length: 1000 }, (_, n) => n))
      yield* Client.push(onA.channel, "shout", { n: "after" })
      yield* eventually(() => shouts(onB.seen).length === 1, "a broadcast after Redis answers again")
      expect((yield* a.node.stats).published).toBe(1001)
    }), 60_000)
})
