/**
 * Redis Cluster with sharded pub/sub: three masters started by the test,
 * made one cluster with `redis-cli --cluster create`, two nodes on it.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Node from "./utils/node.js"
import { eventually, member, shouts, until } from "./utils/members.js"
import { redisCluster } from "./utils/redis.js"

const topics = Array.from({ length: 12 }, (_, i) => `rooms:${i}`)

/** SHARDNUMSUB of a channel on one master (each master answers for the channels of its own slots). */
const shardSubscribers = (url: string, channel: string) => {
  const port = new URL(url).port
  const out = execFileSync("redis-cli", ["-p", port, "pubsub", "shardnumsub", channel], { encoding: "utf8" })
  return Number(out.split("\n")[1])
}

describe("Redis Cluster", () => {
  it.scopedLive("broadcasts cross nodes through SSUBSCRIBE/SPUBLISH on the shard of each topic", () =>
    Effect.gen(function*() {
      const masters = yield* redisCluster
      const options = {
        cluster: { nodes: masters, sharded: true },
        prefix: Node.uniquePrefix("cluster"),
        heartbeatInterval: "200 millis",
        nodeTimeout: "1 second"
      } as const
      const a = yield* Node.start(options)
      const b = yield* Node.start(options)
      const senders = yield* Effect.forEach(topics, (topic) => member(a, topic))
      const receivers = yield* Effect.forEach(topics, (topic) => member(b, topic))

      // Every topic's channel is subscribed by both nodes on exactly one master: its shard.
      const spread = new Set<string>()
      for (const topic of topics) {
        const channel = `${options.prefix}:${topic}`
        const counts = masters.map((url) => shardSubscribers(url, channel))
        expect(counts.reduce((sum, count) => sum + count, 0)).toBe(2)
        spread.add(masters[counts.findIndex((count) => count === 2)]!)
      }
      // Twelve topics land on more than one shard.
      expect(spread.size).toBeGreaterThan(1)

      for (const [i, sender] of senders.entries()) {
        for (let n = 0; n < 10; n++) sender.channel.push("shout", { topic: i, n })
      }
      yield* eventually(() => receivers.every(({ seen }) => shouts(seen).length === 10), "10 shouts per topic on b", 10_000)
      for (const [i, receiver] of receivers.entries()) {
        expect(shouts(receiver.seen)).toEqual(Array.from({ length: 10 }, (_, n) => ({ topic: i, n })))
      }
      yield* a.broadcaster.broadcast("rooms:0", "shout", { from: "broadcaster" })
      yield* eventually(() => shouts(receivers[0]!.seen).length === 11, "the broadcaster's shout")
      // The cluster-wide count works on a cluster too (its keys share one slot).
      yield* until(b.cluster.connected, (count) => count === 24, "24 connections in the cluster")

      // Classic pub/sub on the same cluster (sharded: false): the cluster bus carries it to every master.
      const classic = { ...options, cluster: { nodes: masters, sharded: false }, prefix: Node.uniquePrefix("classic") }
      const c = yield* Node.start(classic)
      const d = yield* Node.start(classic)
      const onC = yield* member(c, "rooms:classic")
      const onD = yield* member(d, "rooms:classic")
      for (let n = 0; n < 10; n++) onC.channel.push("shout", { n })
      yield* eventually(() => shouts(onD.seen).length === 10, "10 classic shouts on d", 10_000)
      expect(shouts(onD.seen)).toEqual(Array.from({ length: 10 }, (_, n) => ({ n })))
    }), 60_000)
})
