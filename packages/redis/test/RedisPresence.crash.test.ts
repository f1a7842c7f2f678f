import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { connect, converged, type NodeOptions, startChildNode, startNode, uniquePrefix } from "./utils/presenceNode.js"

describe("RedisPresence, a node killed", () => {
  it.scopedLive("SIGKILL: the others drop its entries after the down period, with leave diffs; it restarts with nothing", () =>
    Effect.gen(function*() {
      const config: NodeOptions = {
        prefix: uniquePrefix("crash"),
        batchWindow: "100 millis",
        downAfter: "1500 millis",
        heartbeatInterval: "250 millis"
      }
      const a = yield* startNode(config)
      const b = yield* startNode(config)
      const child = yield* startChildNode(config)
      const ada = yield* connect(a.socketUrl, "room:1", { user: "ada" })
      const onB = yield* connect(b.socketUrl, "room:1")
      const carl = yield* connect(child.socketUrl, "room:1", { user: "carl", meta: { on: "child" } })
      yield* converged([ada, onB, carl], { ada: ["{}"], carl: ['{"on":"child"}'] }, 10_000)
      const [carlRef] = carl.state()["carl"]!.metas.map((meta) => meta.phx_ref)

      yield* child.kill("SIGKILL")
      const killed = Date.now()
      // No goodbye: carl is still there well into the down period.
      yield* Effect.sleep("700 millis")
      expect(ada.view()).toEqual({ ada: ["{}"], carl: ['{"on":"child"}'] })
      yield* converged([ada, onB], { ada: ["{}"] }, 5000)
      // Its last heartbeat came at most 250 ms before the kill: the down period ran from there.
      expect(Date.now() - killed).toBeGreaterThanOrEqual(1250)
      for (const client of [ada, onB]) {
        const left = client.diffs.filter((diff) => diff.leaves["carl"]?.metas.some((meta) => meta.phx_ref === carlRef))
        expect(left).toHaveLength(1)
      }

      // The node restarts: a new node id, nothing tracked; its clients see the others.
      const restarted = yield* startChildNode(config)
      const watcher = yield* connect(restarted.socketUrl, "room:1")
      yield* converged([watcher], { ada: ["{}"] }, 10_000)
      yield* Effect.sleep("300 millis")
      yield* converged([ada, onB, watcher], { ada: ["{}"] }, 100)
    }), { timeout: 60_000 })
})
