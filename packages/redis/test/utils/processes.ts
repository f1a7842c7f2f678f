/**
 * Nodes in child processes (`fixtures/node.ts` under tsx), killed when the scope closes.
 */
import type { RedisBroker } from "../../src/index.js"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"

const fixture = fileURLToPath(new URL("../fixtures/node.ts", import.meta.url))

// Killed with this process too, should it end without closing its scopes.
const running = new Set<ChildProcess>()
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})

export interface ChildNode {
  readonly socketUrl: string
  readonly nodeId: string
  readonly pid: number
  /** Kills the process with `signal` and waits for it to exit. */
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
}

export const spawnNode = (options: RedisBroker.Options): Effect.Effect<ChildNode, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<ChildNode>((resume) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--conditions=@effect-channels/source", fixture], {
        env: { ...process.env, NODE_OPTIONS_JSON: JSON.stringify(options) },
        stdio: ["ignore", "pipe", "inherit"]
      })
      running.add(child)
      const exited = new Promise<void>((resolve) =>
        child.once("exit", () => {
          running.delete(child)
          resolve()
        })
      )
      let buffered = ""
      const onData = (chunk: Buffer) => {
        buffered += chunk.toString("utf8")
        const line = buffered.split("\n").find((candidate) => candidate.startsWith("{\"port\""))
        if (line === undefined) return
        child.stdout!.off("data", onData)
        const { nodeId, port } = JSON.parse(line) as { port: number; nodeId: string }
        resume(Effect.succeed({
          socketUrl: `ws://127.0.0.1:${port}/socket`,
          nodeId,
          pid: child.pid!,
          kill: (signal) =>
            Effect.promise(() => {
              if (child.exitCode === null && child.signalCode === null) child.kill(signal)
              return exited
            })
        }))
      }
      child.stdout!.on("data", onData)
      child.once("exit", (code) => resume(Effect.dieMessage(`node process exited with ${code} before serving`)))
    }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("node process did not start") }), Effect.orDie),
    (node) => node.kill("SIGKILL")
  )
