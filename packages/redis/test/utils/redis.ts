/**
 * `redis-server` processes of the tests' own, on free ports: one to stop
 * and restart, or three masters made a cluster with `redis-cli --cluster
 * create`. Each is killed when its scope closes.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"

/** A free TCP port on 127.0.0.1 (the OS picks it; it is released before use). */
export const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const cli = (port: number, ...args: Array<string>) =>
  Effect.async<string, Error>((resume) => {
    execFile("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...args], (error, stdout) => {
      resume(error ? Effect.fail(error) : Effect.succeed(stdout))
    })
  })

/** Waits until the server on `port` answers PING. */
const awaitPing = (port: number) =>
  cli(port, "ping").pipe(
    Effect.filterOrFail((out) => out.trim() === "PONG", () => new Error("no PONG")),
    Effect.tapError(() => Effect.sleep("50 millis")),
    Effect.retry({ times: 100 }),
    Effect.orDie
  )

export interface RedisProcess {
  readonly port: number
  readonly url: string
  /** Kills the server (SIGKILL: no goodbye to its clients). */
  readonly stop: Effect.Effect<void>
  /** Starts a new server on the same port: empty, unless persistent. */
  readonly start: Effect.Effect<void>
  /** Sends the server a signal: SIGSTOP freezes it (connections stay open, nothing is answered), SIGCONT resumes it. */
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
}

const kill = (child: ChildProcess | undefined) =>
  Effect.async<void>((resume) => {
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
    child.once("exit", () => resume(Effect.void))
    child.kill("SIGKILL")
  })

// Killed with this process too, should it end without closing its scopes (a crash, a timeout).
const running = new Set<ChildProcess>()
process.once("exit", () => {
  for (const child of running) child.kill("SIGKILL")
})

const serve = (port: number, dir: string, extra: Array<string>) => {
  const child = spawn("redis-server", [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, ...extra
  ], { stdio: "ignore" })
  running.add(child)
  child.once("exit", () => running.delete(child))
  return child
}

/**
 * A `redis-server` on a free port, for the life of the scope; with
 * `persistent`, an append-only file written on every command, which a
 * restart reads back.
 */
export const redisServerWith = (options: { readonly persistent: boolean }): Effect.Effect<RedisProcess, never, Scope.Scope> => Effect.gen(function*() {
  const port = yield* freePort
  const dir = mkdtempSync(join(tmpdir(), "ec-redis-"))
  const extra = options.persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : []
  let child: ChildProcess | undefined
  const start = Effect.suspend(() => {
    child = serve(port, dir, extra)
    return awaitPing(port)
  })
  const stop = Effect.suspend(() => kill(child))
  yield* Effect.acquireRelease(start, () => Effect.zipRight(stop, Effect.sync(() => rmSync(dir, { recursive: true, force: true }))))
  const signal = (name: NodeJS.Signals) => Effect.sync(() => void child?.kill(name))
  return { port, url: `redis://127.0.0.1:${port}`, stop, start, signal }
})

/** A `redis-server` on a free port that keeps nothing, for the life of the scope. */
export const redisServer: Effect.Effect<RedisProcess, never, Scope.Scope> = redisServerWith({ persistent: false })

/** Three masters on free ports made one Redis Cluster, for the life of the scope: their URLs. */
export const redisCluster: Effect.Effect<ReadonlyArray<string>, never, Scope.Scope> = Effect.gen(function*() {
  const ports = [yield* freePort, yield* freePort, yield* freePort]
  for (const port of ports) {
    const dir = mkdtempSync(join(tmpdir(), "ec-redis-cluster-"))
    yield* Effect.acquireRelease(
      Effect.sync(() => serve(port, dir, ["--cluster-enabled", "yes", "--cluster-config-file", join(dir, "nodes.conf")])),
      (child) => Effect.zipRight(kill(child), Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    )
    yield* awaitPing(port)
  }
  yield* cli(ports[0]!, "--cluster", "create", ...ports.map((port) => `127.0.0.1:${port}`), "--cluster-replicas", "0", "--cluster-yes").pipe(Effect.orDie)
  // Wait until every master sees the cluster as ok (slots assigned and gossiped).
  for (const port of ports) {
    yield* cli(port, "cluster", "info").pipe(
      Effect.filterOrFail((out) => out.includes("cluster_state:ok"), () => new Error("cluster not ok")),
      Effect.tapError(() => Effect.sleep("100 millis")),
      Effect.retry({ times: 100 }),
      Effect.orDie
    )
  }
  return ports.map((port) => `redis://127.0.0.1:${port}`)
})
