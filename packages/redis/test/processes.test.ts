/**
 * Nodes in separate processes, and one in this process, on the Redis at
 * 127.0.0.1:6379: what crosses processes, and a node killed without a
 * goodbye leaving the cluster-wide count.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Node from "./utils/node.js"
import { eventually, member, shouts, until } from "./utils/members.js"
import * as Client from "./utils/phoenixClient.js"
import { spawnNode } from "./utils/processes.js"

describe("nodes in separate processes", () => {
  it.scopedLive("broadcast, broadcastFrom, disconnect and the cluster count cross processes; a killed node drops out", () =>
    Effect.gen(function*() {
      const options = { prefix: Node.uniquePrefix("processes"), heartbeatInterval: "200 millis", nodeTimeout: "4 seconds" } as const
      const [one, two] = yield* Effect.all([spawnNode(options), spawnNode(options)], { concurrency: 2 })
      const here = yield* Node.start(options)
      const sender = yield* member(one!, "rooms:p", { id: "user:ada" })
      const neighbour = yield* member(one!, "rooms:p")
      const onTwo = yield* member(two!, "rooms:p", { id: "user:ada" })
      const onHere = yield* member(here, "rooms:p")

      for (let n = 0; n < 20; n++) sender.channel.push("shout", { n })
      yield* Client.push(sender.channel, "shout_from", { n: "from" })
      const expected = [...Array.from({ length: 20 }, (_, n) => ({ n })), { n: "from" }]
      yield* eventually(() => shouts(onTwo.seen).length === 21 && shouts(onHere.seen).length === 21, "21 shouts on two and here")
      expect(shouts(onTwo.seen)).toEqual(expected)
      expect(shouts(onHere.seen)).toEqual(expected)
      yield* eventually(() => shouts(neighbour.seen).length === 21, "21 shouts on the neighbour")
      expect(shouts(sender.seen)).toEqual(expected.slice(0, 20))

      // The count: 2 connections on one, 1 on two, 1 here.
      yield* until(here.cluster.connected, (count) => count === 4, "4 connections in the cluster", 10_000)

      // The broadcaster here reaches the other processes; disconnect closes ada on one and two.
      yield* here.broadcaster.broadcast("rooms:p", "shout", { n: "here" })
      yield* eventually(() => shouts(onTwo.seen).length === 22, "the broadcaster's shout on two")
      let closed = 0
      sender.socket.onClose(() => {
        closed++
      })
      onTwo.socket.onClose(() => {
        closed++
      })
      yield* here.broadcaster.disconnect("user:ada")
      yield* eventually(() => closed === 2, "ada's connections on both processes closed")
      expect(neighbour.socket.isConnected()).toBe(true)

      // Killed without a goodbye: `one` stops heartbeating and drops out after nodeTimeout.
      yield* until(here.cluster.nodes, (nodes) => nodes.length === 3, "three live nodes")
      yield* one!.kill("SIGKILL")
      const nodes = yield* until(here.cluster.nodes, (nodes) => nodes.length === 2, "one dropping out", 15_000)
      expect(nodes.map(({ nodeId }) => nodeId).sort()).toEqual([two!.nodeId, here.node.nodeId].sort())
      yield* until(here.cluster.connected, (count) => count === 1, "the count without one", 5000)

      // A clean stop leaves at once: well before nodeTimeout (4 s), which a loaded machine's
      // child process needs some of to handle its SIGTERM.
      yield* two!.kill("SIGTERM")
      const left = yield* until(here.cluster.nodes, (nodes) => nodes.length === 1, "two leaving", 3000)
      expect(left[0]!.nodeId).toBe(here.node.nodeId)
    }), 60_000)
})
