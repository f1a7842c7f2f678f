/**
 * A property over random joins, leaves, pushes and node crashes on 2 to 3
 * nodes: no subscriber sees a sender's broadcasts out of order or twice, and
 * a member that stays joined receives every broadcast sent after its join.
 */
import * as fc from "fast-check"
import * as Effect from "effect/Effect"
import { describe, expect, it } from "vitest"
import * as Node from "./utils/node.js"
import { eventually, leave, type Member, member } from "./utils/members.js"
import * as Client from "./utils/phoenixClient.js"

type Action =
  | { readonly kind: "join"; readonly node: number; readonly topic: number }
  | { readonly kind: "leave"; readonly member: number }
  | { readonly kind: "push"; readonly member: number; readonly count: number }
  | { readonly kind: "crash"; readonly node: number }

const action: fc.Arbitrary<Action> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("join" as const), node: fc.nat(2), topic: fc.nat(1) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("leave" as const), member: fc.nat(20) }) },
  { weight: 4, arbitrary: fc.record({ kind: fc.constant("push" as const), member: fc.nat(20), count: fc.integer({ min: 1, max: 5 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("crash" as const), node: fc.nat(2) }) }
)

interface Tracked {
  readonly id: number
  readonly node: number
  readonly topic: string
  readonly member: Member
  alive: boolean
}

interface Sent {
  readonly sender: number
  readonly seq: number
  readonly topic: string
  /** Members joined (and so subscribed on every node) when it was sent. */
  readonly audience: ReadonlyArray<Tracked>
}

const received = (tracked: Tracked) =>
  tracked.member.seen
    .filter(({ event }) => event === "shout")
    .map(({ payload }) => payload as { sender: number; seq: number })

const run = (nodeCount: number, actions: ReadonlyArray<Action>) =>
  Effect.gen(function*() {
    const options = { prefix: Node.uniquePrefix("property") }
    const nodes = yield* Effect.all(Array.from({ length: nodeCount }, () => Node.start(options)))
    const members: Array<Tracked> = []
    const sent: Array<Sent> = []
    const seqs = new Map<number, number>()
    const alive = () => members.filter((tracked) => tracked.alive)

    for (const step of actions) {
      switch (step.kind) {
        case "join": {
          const index = step.node % nodeCount
          const topic = `rooms:${step.topic}`
          members.push({ id: members.length, node: index, topic, member: yield* member(nodes[index]!, topic), alive: true })
          break
        }
        case "leave": {
          const candidates = alive()
          if (candidates.length === 0) break
          const tracked = candidates[step.member % candidates.length]!
          tracked.alive = false
          yield* leave(tracked.member.channel)
          break
        }
        case "push": {
          const candidates = alive()
          if (candidates.length === 0) break
          const sender = candidates[step.member % candidates.length]!
          for (let i = 0; i < step.count; i++) {
            const seq = (seqs.get(sender.id) ?? 0) + 1
            seqs.set(sender.id, seq)
            const audience = alive().filter((tracked) => tracked.topic === sender.topic)
            yield* Client.push(sender.member.channel, "shout", { sender: sender.id, seq })
            sent.push({ sender: sender.id, seq, topic: sender.topic, audience })
          }
          break
        }
        case "crash": {
          // The node stops (its connections close); a new node takes its place.
          const index = step.node % nodeCount
          yield* nodes[index]!.stop
          for (const tracked of members) if (tracked.node === index) tracked.alive = false
          nodes[index] = yield* Node.start(options)
          break
        }
      }
    }

    // Every member still joined receives what was sent to it while it was.
    const survivors = alive()
    const owed = (tracked: Tracked) => sent.filter((message) => message.audience.includes(tracked)).length
    yield* eventually(
      () => survivors.every((tracked) => received(tracked).length >= owed(tracked)),
      "every survivor's broadcasts",
      10_000
    )
    // A beat more, so that a duplicate would have arrived.
    yield* Effect.sleep("50 millis")
    for (const tracked of members) {
      const last = new Map<number, number>()
      for (const { sender, seq } of received(tracked)) {
        // In order and once: each sender's sequence numbers only go up.
        expect(seq, `member ${tracked.id}: sender ${sender}'s ${seq} after ${last.get(sender)}`).toBeGreaterThan(last.get(sender) ?? 0)
        last.set(sender, seq)
      }
    }
    for (const tracked of survivors) {
      const expected = sent.filter((message) => message.audience.includes(tracked)).map(({ sender, seq }) => `${sender}:${seq}`)
      const got = new Set(received(tracked).map(({ sender, seq }) => `${sender}:${seq}`))
      for (const key of expected) expect(got.has(key), `member ${tracked.id} missed ${key}`).toBe(true)
    }
  })

describe("property: random joins, leaves, pushes and crashes", () => {
  it("no subscriber sees a sender's broadcasts out of order or twice; survivors miss none", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 3 }),
        fc.array(action, { minLength: 4, maxLength: 24 }),
        (nodeCount, actions) => Effect.runPromise(Effect.scoped(run(nodeCount, actions)))
      ),
      { numRuns: 25, endOnFailure: true }
    )
  }, 60_000)
})
