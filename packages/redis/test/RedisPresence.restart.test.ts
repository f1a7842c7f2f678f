import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { connect, converged, type NodeOptions, request, startNode, uniquePrefix } from "./utils/presenceNode.js"
import { startRedis } from "./utils/presenceRedis.js"

describe("RedisPresence, Redis restarted", () => {
  it.scopedLive("a short outage: each node goes on locally; after the restart every view converges", () =>
    Effect.gen(function*() {
      const redis = yield* startRedis
      const config: NodeOptions = { url: redis.url, prefix: uniquePrefix("restart"), batchWindow: "100 millis", downAfter: "10 seconds" }
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada", meta: { status: "here" } })
      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      const onB = yield* connect(b.socketUrl, "room:1")
      yield* converged([ada, bob, onB], { ada: ['{"status":"here"}'], bob: ["{}"] })

      yield* redis.stop
      // Within a node, presence goes on.
      const carol = yield* connect(a.socketUrl, "room:1", { user: "carol" })
      yield* request(ada, "update", { user: "ada", meta: { status: "away" } })
      yield* Effect.sync(() => bob.channel.leave())
      yield* converged([ada, carol], { ada: ['{"status":"away"}'], bob: ["{}"], carol: ["{}"] })
      yield* converged([onB], { ada: ['{"status":"here"}'] })

      yield* redis.start
      yield* converged([ada, carol, onB], { ada: ['{"status":"away"}'], carol: ["{}"] }, 10_000)
      // And replication goes on as before.
      const dan = yield* connect(b.socketUrl, "room:1", { user: "dan" })
      yield* converged([ada, carol, onB, dan], { ada: ['{"status":"away"}'], carol: ["{}"], dan: ["{}"] })
    }), { timeout: 60_000 })

  it.scopedLive("an outage longer than the down period: the other nodes' entries leave, then join again", () =>
    Effect.gen(function*() {
      const redis = yield* startRedis
      const config: NodeOptions = { url: redis.url, prefix: uniquePrefix("outage"), batchWindow: "100 millis", downAfter: "1 second" }
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada, bob], { ada: ["{}"], bob: ["{}"] })

      yield* redis.stop
      yield* converged([ada], { ada: ["{}"] }, 5000)
      yield* converged([bob], { bob: ["{}"] }, 5000)

      yield* redis.start
      yield* converged([ada, bob], { ada: ["{}"], bob: ["{}"] }, 10_000)
      expect(bob.diffs.some((diff) => "ada" in diff.leaves)).toBe(true)
    }), { timeout: 60_000 })

  it.scopedLive("nodes started while Redis is down serve alone, then join each other once it is up", () =>
    Effect.gen(function*() {
      const redis = yield* startRedis
      yield* redis.stop
      const config: NodeOptions = {
        url: redis.url,
        prefix: uniquePrefix("late"),
        batchWindow: "100 millis",
        downAfter: "3 seconds",
        connectTimeout: "200 millis"
      }
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada], { ada: ["{}"] })
      yield* converged([bob], { bob: ["{}"] })
      yield* redis.start
      yield* converged([ada, bob], { ada: ["{}"], bob: ["{}"] }, 10_000)
    }), { timeout: 60_000 })
})
