/**
 * The packages as a user gets them: packed, installed with npm (no
 * workspace links) into a new app outside the workspace, type-checked under
 * a user's strict settings, built with `tsc`, run with plain `node`, and
 * driven by the official `phoenix` client. A missing export, type or
 * dependency fails here.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import { type ChildProcess, execFile, spawn } from "node:child_process"
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import type { Channel } from "phoenix"
import * as Client from "./utils/phoenixClient.js"

const run = promisify(execFile)
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..")
const fixture = join(root, "packages", "integration", "fixtures", "consumer")
const published = ["channels", "node", "redis", "client"]

/** The install line of the README, for the Effect 3 line. */
const installLine = ["effect@^3.22", "@effect/platform@^0.97", "@effect/platform-node@^0.108"]
/** What the app's phoenix client needs (`@effect-channels/client` takes its `Socket`). */
const clientLine = ["phoenix@^1.8", "ws@^8"]
/** What the app's own build and test files need. */
const devTools = ["typescript@5.9.3", "@types/node@^20", "@effect/vitest@0.30.0", "vitest@3.2.7", "esbuild@^0.25"]

const sh = (command: string, args: ReadonlyArray<string>, cwd: string) =>
  run(command, args, { cwd, maxBuffer: 64 * 1024 * 1024, env: { ...process.env, npm_config_fund: "false" } })
    .catch((error: { stdout?: string; stderr?: string; message: string }) => {
      throw new Error(`${command} ${args.join(" ")} failed in ${cwd}:\n${error.stdout ?? ""}${error.stderr ?? error.message}`)
    })

/** Starts `node <entry>` in the app on a free port; resolves with the port from the "Listening on" line. */
const start = (app: string, entry: string) =>
  new Promise<{ readonly child: ChildProcess; readonly port: number; readonly output: () => string }>(
    (resolve, reject) => {
      const child = spawn(process.execPath, [entry], { cwd: app, env: { ...process.env, PORT: "0" } })
      let output = ""
      const timer = setTimeout(() => reject(new Error(`${entry} did not listen:\n${output}`)), 15_000)
      const onData = (chunk: Buffer) => {
        output += chunk.toString()
        const listening = /Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
        if (listening !== null) {
          clearTimeout(timer)
          resolve({ child, port: Number(listening[1]), output: () => output })
        }
      }
      child.stdout.on("data", onData)
      child.stderr.on("data", onData)
      child.once("exit", (code) => reject(new Error(`${entry} exited with ${code}:\n${output}`)))
    }
  )

const stop = (child: ChildProcess) =>
  new Promise<number | null>((resolve) => {
    if (child.exitCode !== null) return resolve(child.exitCode)
    child.once("exit", (code) => resolve(code))
    child.kill("SIGTERM")
  })

/** Joins a channel made by the caller (so that it listens before the join): the join response. */
const joined = (channel: Channel) =>
  Effect.async<unknown>((resume) => {
    channel.join()
      .receive("ok", (response: unknown) => resume(Effect.succeed(response)))
      .receive("error", (reason: unknown) => resume(Effect.dieMessage(`join refused: ${JSON.stringify(reason)}`)))
      .receive("timeout", () => resume(Effect.dieMessage("join timed out")))
  })

interface ClientRun {
  readonly response?: unknown
  readonly message?: unknown
  readonly joins: ReadonlyArray<unknown>
  readonly position: string
}

/** Runs the app's `dist/client.js` against the server: its JSON line. */
const clientRun = async (app: string, port: number, position?: string): Promise<ClientRun> => {
  const args = ["dist/client.js", String(port), ...(position === undefined ? [] : [position])]
  const { stdout } = await run(process.execPath, args, { cwd: app, timeout: 10_000 })
  return JSON.parse(stdout) as ClientRun
}

const post = (port: number, topic: string, body: string) =>
  fetch(`http://127.0.0.1:${port}/broadcast`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ topic, body })
  }).then((res) => res.json() as Promise<{ readonly connected: number }>)

const presenceKeys = (channel: Channel) =>
  Effect.map(Client.next(channel, "presence_state", 5000), (state) => Object.keys(state as object).sort())

describe("the packages, installed from their tarballs", () => {
  const workdir = mkdtempSync(join(tmpdir(), "effect-channels-consumer-"))
  const app = join(workdir, "app")

  it.live("install, type-check under nodenext, node16 and bundler, build, run with node, and serve phoenix clients", () =>
    Effect.gen(function*() {
      yield* Effect.promise(async () => {
        await sh("pnpm", ["--filter", "@effect-channels/core", "--filter", "@effect-channels/node", "--filter", "@effect-channels/redis", "--filter", "@effect-channels/client", "build"], root)
        const packs = join(workdir, "packs")
        for (const name of published) {
          await sh("pnpm", ["pack", "--pack-destination", packs], join(root, "packages", name))
        }
        cpSync(fixture, app, { recursive: true })
        writeFileSync(join(app, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }))
        const tarballs = readdirSync(packs).map((file) => join(packs, file))
        await sh("npm", ["install", "--no-audit", "--prefer-offline", ...tarballs, ...installLine, ...clientLine], app)
        await sh("npm", ["install", "--no-audit", "--prefer-offline", "--save-dev", ...devTools], app)
      })

      // What ships, and what a user installs with it.
      const core = JSON.parse(readFileSync(join(app, "node_modules/@effect-channels/core/package.json"), "utf8"))
      const node = JSON.parse(readFileSync(join(app, "node_modules/@effect-channels/node/package.json"), "utf8"))
      expect(Object.keys(core.dependencies ?? {})).toEqual([])
      expect(Object.keys(core.peerDependencies).sort()).toEqual(["@effect/platform", "effect"])
      expect(Object.keys(node.dependencies).sort()).toEqual(["@types/ws", "ws"])
      const redis = JSON.parse(readFileSync(join(app, "node_modules/@effect-channels/redis/package.json"), "utf8"))
      expect(Object.keys(redis.dependencies).sort()).toEqual(["ioredis"])
      const client = JSON.parse(readFileSync(join(app, "node_modules/@effect-channels/client/package.json"), "utf8"))
      expect(Object.keys(client.dependencies)).toEqual(["@types/phoenix"])
      expect(Object.keys(client.peerDependencies)).toEqual(["phoenix"])
      const shipped = readdirSync(join(app, "node_modules/@effect-channels/core")).sort()
      expect(shipped).toEqual(["LICENSE", "README.md", "dist", "package.json", "src"])

      // The user's tsc, strict, exactOptionalPropertyTypes, skipLibCheck false, under each resolution.
      yield* Effect.promise(async () => {
        await sh("npx", ["tsc", "-p", "tsconfig.nodenext.json"], app)
        await sh("npx", ["tsc", "-p", "tsconfig.bundler.json"], app)
        await sh("npx", ["tsc", "-p", "tsconfig.node16.json"], app)
        await sh("npx", ["tsc", "-p", "tsconfig.json"], app)
        await sh("npx", ["esbuild", "dist/server.js", "--bundle", "--platform=node", "--format=cjs", "--outfile=bundle.cjs", "--log-level=warning"], app)
      })

      const server = yield* Effect.promise(() => start(app, "dist/server.js"))
      yield* Effect.scoped(Effect.gen(function*() {
        const url = `ws://127.0.0.1:${server.port}/socket`
        const ada = yield* Client.socket(url, { params: { user: "ada" } })
        const bob = yield* Client.socket(url, { params: { user: "bob" } })
        const adaRoom = ada.channel("rooms:1", { user: "ada" })
        const adaSeen = Client.record(adaRoom)
        const adaState = yield* Effect.fork(presenceKeys(adaRoom))
        expect(yield* joined(adaRoom)).toEqual({ welcome: "rooms:1" })
        expect(yield* Fiber.join(adaState)).toEqual(["ada"])
        const bobRoom = bob.channel("rooms:1", { user: "bob" })
        const bobState = yield* Effect.fork(presenceKeys(bobRoom))
        yield* joined(bobRoom)
        expect(yield* Fiber.join(bobState)).toEqual(["ada", "bob"])
        // Ada sees Bob arrive in a diff (batched: her own join may come in one first).
        yield* Client.until(
          (tick) => adaRoom.on("presence_diff", tick),
          () => adaSeen.some(({ event, payload }) => event === "presence_diff" && "bob" in (payload as { joins: object }).joins),
          "bob's join in a presence_diff to ada",
          5000
        )

        const message = yield* Effect.fork(Client.next(bobRoom, "new:msg"))
        adaRoom.push("new:msg", { body: "hello" })
        expect(yield* Fiber.join(message)).toEqual({ body: "hello" })
        expect(yield* Client.push(adaRoom, "echo", { n: 1 })).toEqual(["ok", { n: 1 }])

        const posted = yield* Effect.fork(Effect.all([Client.next(adaRoom, "new:msg"), Client.next(bobRoom, "new:msg")]))
        const response = yield* Effect.promise(() => post(server.port, "rooms:1", "from http"))
        expect(response.connected).toBe(2)
        expect(yield* Fiber.join(posted)).toEqual([{ body: "from http" }, { body: "from http" }])
      }))

      // The app's recoverable channel: a first join, then one from its position after a missed broadcast.
      const first = yield* Effect.promise(() => clientRun(app, server.port))
      expect(first.response).toEqual({ welcome: "rooms:recoverable" })
      expect(first.joins).toEqual([{ recovered: false, position: first.position }])
      expect(first.position).toMatch(/^.+:0$/)
      yield* Effect.promise(() => post(server.port, "rooms:recoverable", "missed"))
      const second = yield* Effect.promise(() => clientRun(app, server.port, first.position))
      expect(second.message).toEqual({ body: "missed" })
      expect(second.joins).toEqual([{ recovered: true, since: first.position, position: first.position }])
      expect(second.position).toBe(first.position.replace(/:0$/, ":1"))
      expect(yield* Effect.promise(() => stop(server.child))).toBe(0)

      const bundled = yield* Effect.promise(() => start(app, "bundle.cjs"))
      expect(yield* Effect.promise(() => stop(bundled.child))).toBe(0)
    }).pipe(Effect.ensuring(Effect.sync(() => rmSync(workdir, { recursive: true, force: true })))), 240_000)
})
