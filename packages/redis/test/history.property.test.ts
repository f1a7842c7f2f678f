/**
 * A property over random schedules, on two nodes with a history in Redis:
 * broadcasts from either node, clients cut off abruptly and rejoining on
 * either node with their last position. Each client sees the topic's
 * broadcasts (as Redis stored them) from its first join's position on, each
 * once, in order, and recovers on every rejoin.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import fc from "fast-check"
import { Redis } from "ioredis"
import * as Codec from "../src/internal/codec.js"
import * as Node from "./utils/node.js"
import { until } from "./utils/members.js"
import { check, nodePort, type RecoveringClient, recoveringClient } from "./utils/recovery.js"

const url = "redis://127.0.0.1:6379"

type Action =
  | { readonly kind: "broadcast"; readonly node: number; readonly count: number }
  | { readonly kind: "cut"; readonly client: number }
  | { readonly kind: "reconnect"; readonly client: number; readonly node: number }

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("broadcast" as const), node: fc.nat(1), count: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("cut" as const), client: fc.nat(2) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant("reconnect" as const), client: fc.nat(2), node: fc.nat(1) }) }
)

/** The topic's broadcasts as Redis stored them: `n` at each offset, from 1. */
const stored = (key: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Redis(url, { lazyConnect: false })),
    (redis) =>
      Effect.promise(() => redis.xrangeBuffer(key, "-", "+")).pipe(Effect.map((entries) =>
        entries.map(([, fields]) => {
          const decoded = Codec.decode(fields[3]!, undefined)
          if (decoded === undefined || typeof decoded === "string") throw new Error(`unreadable entry: ${decoded}`)
          return (decoded.envelope.message.payload as { n: number }).n
        })
      )),
    (redis) => Effect.promise(() => redis.quit())
  )

const run = (clientCount: number, homes: ReadonlyArray<number>, actions: ReadonlyArray<Action>) =>
  Effect.gen(function*() {
    const prefix = Node.uniquePrefix("history-property")
    const nodes = yield* Effect.all([0, 1].map(() =>
      Node.start({ url, prefix }, { "rooms:*": { size: 1000, ttl: "1 minute" } })
    ))
    const topic = "rooms:property"
    const clients: Array<RecoveringClient> = Array.from({ length: clientCount }, () => recoveringClient(topic))
    const connected = clients.map(() => true)
    yield* Effect.forEach(clients, (client, i) => client.connect(nodePort(nodes[homes[i]!]!)), { discard: true })
    let sent = 0
    for (const step of actions) {
      if (step.kind === "broadcast") {
        const node = nodes[step.node]!
        for (let k = 0; k < step.count; k++) {
          yield* node.broadcaster.broadcast(topic, "shout", { n: sent++ }).pipe(Effect.orDie)
        }
        continue
      }
      const index = step.client % clientCount
      const client = clients[index]!
      if (connected[index]) yield* client.cut
      connected[index] = false
      if (step.kind === "reconnect") {
        yield* client.connect(nodePort(nodes[step.node]!))
        connected[index] = true
      }
    }
    yield* Effect.forEach(clients, (client, i) => connected[i] ? Effect.void : client.connect(nodePort(nodes[i % 2]!)), {
      discard: true
    })
    const truth = yield* until(stored(`${prefix}:history:${topic}`), (ns) => ns.length === sent, `${sent} stored`)
    yield* until(
      Effect.sync(() => clients.every((client) => (client.last()?.offset ?? 0) >= sent)),
      (done) => done,
      "every client caught up",
      10_000
    )
    // A beat more, so that a duplicate would have arrived.
    yield* Effect.sleep("50 millis")
    for (const [i, client] of clients.entries()) {
      expect(check(client.seen, truth), `client ${i}`).toEqual([])
      const joins = client.joins()
      // The first join offers no position; every rejoin recovers (the history holds every broadcast).
      expect(joins.slice(1).every(({ recovered }) => recovered), `client ${i}'s rejoins`).toBe(true)
    }
    // Each broadcast stored once (two nodes' broadcasts may reach Redis in either order).
    expect([...truth].sort((x, y) => x - y)).toEqual(Array.from({ length: sent }, (_, n) => n))
    for (const node of nodes) expect((yield* node.node.stats).dropped).toBe(0)
  })

describe("property: broadcasts, abrupt cuts and rejoins on random nodes", () => {
  it("every client sees every broadcast once, in order, recovering on every rejoin", async () => {
    const started = Date.now()
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 3 }),
        fc.array(fc.nat(1), { minLength: 3, maxLength: 3 }),
        fc.array(action, { minLength: 4, maxLength: 24 }),
        (clientCount, homes, actions) => Effect.runPromise(Effect.scoped(run(clientCount, homes, actions)))
      ),
      { numRuns: 25, endOnFailure: true }
    )
    console.log(`25 runs in ${Date.now() - started} ms`)
  }, 60_000)
})
