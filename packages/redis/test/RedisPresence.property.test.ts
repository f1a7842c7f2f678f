import { describe, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import fc from "fast-check"
import {
  type Client,
  connect,
  converged,
  type NodeOptions,
  request,
  startChildNode,
  startNode,
  uniquePrefix,
  type View
} from "./utils/presenceNode.js"

type Command =
  | { readonly t: "join"; readonly node: number; readonly user: string; readonly v: number }
  | { readonly t: "leave"; readonly pick: number }
  | { readonly t: "update"; readonly pick: number; readonly v: number }
  | { readonly t: "crash" }
  | { readonly t: "pause"; readonly ms: number }

const command: fc.Arbitrary<Command> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant("join" as const), node: fc.nat(2), user: fc.constantFrom("ada", "bob", "cy"), v: fc.nat(9) }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant("leave" as const), pick: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant("update" as const), pick: fc.nat(), v: fc.nat(9) }), weight: 2 },
  { arbitrary: fc.constant({ t: "crash" as const }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant("pause" as const), ms: fc.integer({ min: 0, max: 150 }) }), weight: 2 }
)

interface Tracked {
  readonly client: Client
  readonly node: number
  readonly user: string
  v: number
}

const viewOfModel = (tracked: ReadonlyArray<Tracked>): View => {
  const view: Record<string, Array<string>> = {}
  for (const { user, v } of tracked) (view[user] ??= []).push(JSON.stringify({ v }))
  return Object.fromEntries(Object.entries(view).map(([key, metas]) => [key, metas.sort()] as const)
    .sort(([a], [b]) => a.localeCompare(b)))
}

/**
 * Nodes 0 and 1 run in this process; with three nodes, node 2 runs in a
 * child process, the one a `crash` kills (SIGKILL), after which joins meant
 * for it go to node 0.
 */
const run = (nodes: 2 | 3, commands: ReadonlyArray<Command>) =>
  Effect.scoped(Effect.gen(function*() {
    const config: NodeOptions = { prefix: uniquePrefix("property"), batchWindow: "100 millis", downAfter: "1 second" }
    const urls = [(yield* startNode(config)).socketUrl, (yield* startNode(config)).socketUrl]
    const child = nodes === 3 ? yield* startChildNode(config) : undefined
    if (child !== undefined) urls.push(child.socketUrl)
    let crashed = false
    const watchers: Array<{ readonly node: number; readonly client: Client }> = []
    for (const [node, url] of urls.entries()) watchers.push({ node, client: yield* connect(url, "room:1") })
    let tracked: Array<Tracked> = []
    for (const command of commands) {
      switch (command.t) {
        case "join": {
          const node = command.node >= urls.length || (crashed && command.node === 2) ? 0 : command.node
          const client = yield* connect(urls[node]!, "room:1", { user: command.user, meta: { v: command.v } })
          tracked.push({ client, node, user: command.user, v: command.v })
          break
        }
        case "leave": {
          if (tracked.length === 0) break
          const [gone] = tracked.splice(command.pick % tracked.length, 1)
          gone!.client.channel.leave()
          break
        }
        case "update": {
          if (tracked.length === 0) break
          const entry = tracked[command.pick % tracked.length]!
          yield* request(entry.client, "update", { user: entry.user, meta: { v: command.v } })
          entry.v = command.v
          break
        }
        case "crash": {
          if (child === undefined || crashed) break
          yield* child.kill("SIGKILL")
          crashed = true
          tracked = tracked.filter((entry) => entry.node !== 2)
          break
        }
        case "pause":
          yield* Effect.sleep(command.ms)
      }
    }
    const alive = [
      ...watchers.filter(({ node }) => !(crashed && node === 2)).map(({ client }) => client),
      ...tracked.map(({ client }) => client)
    ]
    yield* converged(alive, viewOfModel(tracked), 10_000)
  }))

describe("RedisPresence, property", () => {
  it.live("random joins, leaves and updates over 2 nodes: every client's view converges to the model's", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.array(command, { minLength: 4, maxLength: 16 }),
          (commands) => Effect.runPromise(run(2, commands))
        ),
        { numRuns: 5, endOnFailure: true }
      )
    ), { timeout: 120_000 })

  it.live("random joins, leaves, updates and a SIGKILL over 3 nodes: every client's view converges to the model's", () =>
    Effect.promise(() =>
      fc.assert(
        fc.asyncProperty(
          fc.array(command, { minLength: 4, maxLength: 16 }),
          fc.nat(),
          // One crash at least, anywhere: before, among or after the other commands.
          (commands, at) => {
            const position = at % (commands.length + 1)
            const withCrash = [...commands.slice(0, position), { t: "crash" } as const, ...commands.slice(position)]
            return Effect.runPromise(run(3, withCrash))
          }
        ),
        { numRuns: 4, endOnFailure: true }
      )
    ), { timeout: 120_000 })
})
