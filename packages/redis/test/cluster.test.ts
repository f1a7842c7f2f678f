/**
 * Redis Cluster with sharded pub/sub: three masters started by the test,
 * made one cluster with `redis-cli --cluster create`, two nodes on it;
 * classic pub/sub and histories on the same cluster.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { execFileSync } from "node:child_process"
import * as Node from "./utils/node.js"
import { eventually, member, shouts, until } from "./utils/members.js"
import { check, nodePort, recoveringClient } from "./utils/recovery.js"
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

      // Histories on the cluster: each topic's keys and SPUBLISH on its shard, recovery on the other node.
      const history = { ...options, prefix: Node.uniquePrefix("cluster-history") }
      const histories = { "rooms:*": { size: 100, ttl: "1 minute" } } as const
      const e = yield* Node.start(history, histories)
      const f = yield* Node.start(history, histories)
      const recovering = topics.slice(0, 4).map((topic) => ({ topic, client: recoveringClient(topic) }))
      yield* Effect.forEach(recovering, ({ client }) => client.connect(nodePort(e)), { discard: true })
      const ns = Array.from({ length: 20 }, (_, n) => n)
      for (const { topic } of recovering) {
        for (const n of ns.slice(0, 10)) yield* f.broadcaster.broadcast(topic, "shout", { n })
      }
      yield* eventually(() => recovering.every(({ client }) => client.ns().length === 10), "10 broadcasts per topic on e")
      for (const { client, topic } of recovering) {
        yield* client.cut
        for (const n of ns.slice(10)) yield* e.broadcaster.broadcast(topic, "shout", { n })
        yield* client.connect(nodePort(f))
      }
      yield* eventually(() => recovering.every(({ client }) => client.ns().length === 20), "20 broadcasts per topic", 10_000)
      for (const { client } of recovering) {
        expect(check(client.seen, ns)).toEqual([])
        expect(client.joins().map(({ recovered }) => recovered)).toEqual([false, true])
      }
    }), 60_000)
})
