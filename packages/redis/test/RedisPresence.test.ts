import { Broker, type Presence } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import { RedisPresence } from "../src/index.js"
import {
  connect,
  converged,
  eventually,
  type NodeOptions,
  request,
  startNode,
  uniquePrefix
} from "./utils/presenceNode.js"

const options = (name: string): NodeOptions => ({
  prefix: uniquePrefix(name),
  batchWindow: "100 millis",
  downAfter: "3 seconds"
})

const refsOf = (state: Presence.State) => Object.values(state).flatMap(({ metas }) => metas.map((meta) => meta.phx_ref))

describe("RedisPresence", () => {
  it.scopedLive("a client on node B gets, in presence_state, what node A tracks, then every diff", () =>
    Effect.gen(function*() {
      const config = options("state")
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada", meta: { n: 1 } })
      const watcher = yield* connect(b.socketUrl, "room:1")
      yield* converged([ada, watcher], { ada: ['{"n":1}'] })

      // A client joining B now has ada from presence_state, with no diff.
      const late = yield* connect(b.socketUrl, "room:1")
      yield* converged([late], { ada: ['{"n":1}'] })
      expect(late.diffs).toEqual([])

      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada, watcher, late, bob], { ada: ['{"n":1}'], bob: ["{}"] })
      yield* Effect.sync(() => bob.channel.leave())
      yield* converged([ada, watcher, late], { ada: ['{"n":1}'] })
    }))

  it.scopedLive("one user on two nodes is one key with two metas, unique refs, on every client", () =>
    Effect.gen(function*() {
      const config = options("tabs")
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const tab1 = yield* connect(a.socketUrl, "room:1", { user: "ada", meta: { tab: 1 } })
      const tab2 = yield* connect(b.socketUrl, "room:1", { user: "ada", meta: { tab: 2 } })
      yield* converged([tab1, tab2], { ada: ['{"tab":1}', '{"tab":2}'] })
      const refs = refsOf(tab1.state())
      expect(new Set(refs).size).toBe(2)
      expect(refsOf(tab2.state()).sort()).toEqual([...refs].sort())
      yield* request(tab2, "untrack", { user: "ada" })
      yield* converged([tab1, tab2], { ada: ['{"tab":1}'] })
    }))

  it.scopedLive("an update on node A reaches node B as a leave and a join with phx_ref_prev, once", () =>
    Effect.gen(function*() {
      const config = options("update")
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada", meta: { status: "here" } })
      const watcher = yield* connect(b.socketUrl, "room:1")
      yield* converged([watcher], { ada: ['{"status":"here"}'] })
      const [before] = refsOf(watcher.state())
      const { ref } = (yield* request(ada, "update", { user: "ada", meta: { status: "away" } })) as { ref: string }
      yield* converged([ada, watcher], { ada: ['{"status":"away"}'] })
      expect(watcher.state()).toEqual({ ada: { metas: [{ status: "away", phx_ref: ref, phx_ref_prev: before }] } })
      const carrying = watcher.diffs.filter((diff) => diff.joins["ada"]?.metas.some((meta) => meta.phx_ref === ref))
      // One diff carries the update (the earlier join may share its window): the new meta joins, the old leaves.
      expect(carrying).toHaveLength(1)
      expect(carrying[0]!.joins["ada"]!.metas).toContainEqual({ status: "away", phx_ref: ref, phx_ref_prev: before })
      expect(carrying[0]!.leaves).toEqual({ ada: { metas: [{ status: "here", phx_ref: before }] } })
    }))

  it.scopedLive("three nodes: every client's view is the union; a clean stop removes a node's entries at once", () =>
    Effect.gen(function*() {
      // A down period far longer than the wait below: only the goodbye can explain the leave.
      const config: NodeOptions = { ...options("three"), downAfter: "30 seconds" }
      const nodes = [yield* startNode(config), yield* startNode(config), yield* startNode(config)]
      const clients = []
      for (const [i, node] of nodes.entries()) {
        clients.push(yield* connect(node.socketUrl, "room:1", { user: `user${i}` }))
        clients.push(yield* connect(node.socketUrl, "room:1"))
      }
      yield* converged(clients, { user0: ["{}"], user1: ["{}"], user2: ["{}"] })
      // Diffs are batched per topic: three joins from three nodes, a handful of diffs at most.
      for (const client of clients) expect(client.diffs.length).toBeLessThanOrEqual(3)

      yield* nodes[2]!.stop
      const started = Date.now()
      yield* converged(clients.slice(0, 4), { user0: ["{}"], user1: ["{}"] }, 3000)
      expect(Date.now() - started).toBeLessThan(3000)
    }))

  it.scopedLive("diffs stay batched per topic on every node: 20 joins on A reach B's client in a few diffs, not 20", () =>
    Effect.gen(function*() {
      const config: NodeOptions = { ...options("batch"), batchWindow: "1 second" }
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const watcher = yield* connect(b.socketUrl, "room:1")
      const users = Array.from({ length: 20 }, (_, i) => `user${String(i).padStart(2, "0")}`)
      yield* Effect.forEach(users, (user) => connect(a.socketUrl, "room:1", { user }), { concurrency: "unbounded" })
      yield* converged([watcher], Object.fromEntries(users.map((user) => [user, ["{}"]])), 5000)
      expect(watcher.diffs.length).toBeGreaterThanOrEqual(1)
      // One window holds them all on a quiet machine; a loaded one may spread the joins over three.
      expect(watcher.diffs.length).toBeLessThanOrEqual(3)
    }))

  it.scopedLive("with a broker that spans the nodes, each diff reaches each client once", () =>
    Effect.gen(function*() {
      // Two local brokers joined into one that spans both nodes, as RedisBroker does:
      // `publish` reaches both nodes' subscribers, `publishLocal` this node's.
      const locals = [yield* Broker.makeLocal, yield* Broker.makeLocal]
      const spanning = (i: number): Broker.Service => ({
        ...locals[i]!,
        publish: (envelope) => Effect.forEach(locals, (local) => local.publish(envelope), { discard: true }),
        publishLocal: locals[i]!.publishLocal
      })
      const config = options("spanning")
      const a = yield* startNode({ ...config, broker: spanning(0) })
      const b = yield* startNode({ ...config, broker: spanning(1) })
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const onA = yield* connect(a.socketUrl, "room:1")
      const onB = yield* connect(b.socketUrl, "room:1")
      yield* converged([ada, onA, onB], { ada: ["{}"] })
      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada, onA, onB, bob], { ada: ["{}"], bob: ["{}"] })
      yield* request(ada, "untrack", { user: "ada" })
      yield* converged([ada, onA, onB, bob], { bob: ["{}"] })
      for (const client of [onA, onB]) {
        const seen = client.diffs.flatMap((diff) => [...refsOf(diff.joins), ...refsOf(diff.leaves)])
        expect(seen.length).toBe(new Set(seen).size + 1) // ada's ref joins and leaves, bob's joins: nothing twice
      }
    }))

  it.scopedLive("a meta that JSON cannot carry stays on its node; replication goes on", () =>
    Effect.gen(function*() {
      const config = options("unencodable")
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const hidden = yield* connect(a.socketUrl, "room:1", { user: "ghost", unencodable: true })
      const watcher = yield* connect(b.socketUrl, "room:1:hidden")
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const onB = yield* connect(b.socketUrl, "room:1")
      yield* converged([ada, onB], { ada: ["{}"] })
      yield* Effect.sleep("300 millis")
      expect(watcher.view()).toEqual({})
      yield* Effect.sync(() => hidden.channel.leave())
      const bob = yield* connect(a.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada, onB, bob], { ada: ["{}"], bob: ["{}"] })
    }))

  it.effect("invalid options are a typed error listing every problem", () =>
    Effect.gen(function*() {
      const invalid = yield* Effect.exit(
        Effect.scoped(RedisPresence.make({ url: "http://x", downAfter: "1 second", heartbeatInterval: "1 second" }))
      )
      expect(invalid).toEqual(Exit.fail(expect.objectContaining({ _tag: "RedisPresenceError", reason: "InvalidOptions" })))
      const error = Exit.isFailure(invalid) ? JSON.stringify(invalid.cause) : ""
      expect(error).toContain("url must be")
      expect(error).toContain("downAfter must be at least twice heartbeatInterval")
    }))

  it.scopedLive("a node's entries stay apart from another cluster's (prefix)", () =>
    Effect.gen(function*() {
      const a = yield* startNode(options("cluster-a"))
      const b = yield* startNode(options("cluster-b"))
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const bob = yield* connect(b.socketUrl, "room:1", { user: "bob" })
      yield* converged([ada], { ada: ["{}"] })
      yield* converged([bob], { bob: ["{}"] })
      yield* Effect.sleep("500 millis")
      yield* eventually(() => [ada.view(), bob.view()], ([x, y]) => !("bob" in x!) && !("ada" in y!), 100)
    }))
})
