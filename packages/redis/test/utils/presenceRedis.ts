/**
 * A `redis-server` of the test's own, on a free port, for the tests that stop
 * and restart Redis: no persistence, so that a restart comes back empty.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"

const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    server.close(() => resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0)))
  })
})

const launch = (port: number) =>
  Effect.async<ChildProcess>((resume) => {
    const child = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let output = ""
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8")
      if (output.includes("Ready to accept connections")) resume(Effect.succeed(child))
    })
    child.once("exit", (code) => resume(Effect.dieMessage(`redis-server exited (${code}): ${output}`)))
  }).pipe(Effect.timeoutFail({ duration: "10 seconds", onTimeout: () => new Error("redis-server did not start") }), Effect.orDie)

const stopped = (child: ChildProcess) =>
  Effect.async<void>((resume) => {
    if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

export interface TestRedis {
  readonly url: string
  /** Kills the server (no goodbye to its clients). */
  readonly stop: Effect.Effect<void>
  /** Starts a new, empty server at the same address. */
  readonly start: Effect.Effect<void>
}

/** A server for the life of the scope. */
export const startRedis: Effect.Effect<TestRedis, never, Scope.Scope> = Effect.gen(function*() {
  const port = yield* freePort
  let current = yield* launch(port)
  yield* Effect.addFinalizer(() => stopped(current))
  return {
    url: `redis://127.0.0.1:${port}`,
    stop: Effect.suspend(() => stopped(current)),
    start: Effect.map(launch(port), (child) => void (current = child))
  }
})
