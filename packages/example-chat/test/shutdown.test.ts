/**
 * The chat server from the outside, with the official `phoenix` client:
 *
 * - its HTTP contract, in process (`ChatServer.layer` on port 0);
 * - a clean shutdown on SIGTERM, as a child process under
 *   `NodeRuntime.runMain`: every client is closed with 1001 (going away: the
 *   client reconnects), every `disconnect` runs once, and the process exits
 *   with code 0, which is what `runMain` gives an exit that is only an
 *   interruption (its `defaultTeardown`; the signal handler interrupts the
 *   main fiber, then calls `process.exit(code)`).
 */
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { type ChildProcess, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import * as Net from "node:net"
import { createRequire } from "node:module"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"
import { type Channel, Socket } from "phoenix"
import WebSocket from "ws"
import * as ChatServer from "../src/ChatServer.js"

const packageDir = fileURLToPath(new URL("..", import.meta.url))

/** Dies when `effect` takes longer than `timeout` ms (real time). */
const bounded = <A, E, R>(effect: Effect.Effect<A, E, R>, what: string, timeout = 5000) =>
  Effect.timeoutFailCause(effect, {
    duration: timeout,
    onTimeout: () => Cause.die(new Error(`timed out waiting for ${what}`))
  })

/** Waits, with callbacks, until `check` holds. */
const until = (check: () => boolean, what: string, timeout = 5000) =>
  bounded(
    Effect.async<void>((resume) => {
      const poll = setInterval(() => {
        if (!check()) return
        clearInterval(poll)
        resume(Effect.void)
      }, 5)
      return Effect.sync(() => clearInterval(poll))
    }),
    what,
    timeout
  )

interface Member {
  readonly socket: Socket
  readonly channel: Channel
  /** Every event the channel received, in order (replies excluded). */
  readonly events: Array<readonly [string, unknown]>
  /** The close codes the socket saw. */
  readonly closes: Array<number>
}

const socketUrl = (port: number) => `ws://127.0.0.1:${port}/socket`

/**
 * A phoenix client connected to `port` with connect `params`, with no
 * automatic reconnection; disconnected with the scope.
 */
const client = (
  port: number,
  params: object
): Effect.Effect<{ readonly socket: Socket; readonly closes: Array<number> }, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const closes: Array<number> = []
      const socket = new Socket(socketUrl(port), { transport: WebSocket, params, reconnectAfterMs: () => 60_000 })
      socket.onClose((event: { readonly code: number }) => {
        closes.push(event.code)
      })
      socket.connect()
      return { socket, closes }
    }),
    ({ socket }) => Effect.sync(() => socket.disconnect())
  )

/**
 * Connects with `params` (the fixture's `disconnect` reports the connect
 * param `user`) and joins `topic` with the same `params`: the member, or fails
 * with the refusal (the channel is then left).
 */
const join = (port: number, topic: string, params: object) =>
  Effect.gen(function*() {
    const { closes, socket } = yield* client(port, params)
    const channel = socket.channel(topic, params)
    const events: Array<readonly [string, unknown]> = []
    channel.onMessage = (event: string, payload: unknown) => {
      if (event !== "phx_reply") events.push([event, payload])
      return payload
    }
    yield* bounded(
      Effect.async<void, unknown>((resume) => {
        channel.join()
          .receive("ok", () => resume(Effect.void))
          .receive("error", (reason: unknown) => {
            channel.leave()
            resume(Effect.fail(reason))
          })
      }),
      `the join of ${topic}`
    )
    return { socket, channel, events, closes } satisfies Member
  })

const lobby = (port: number, params: object = {}) => Effect.orDie(join(port, "rooms:lobby", params))

/** The payloads of the `event`s a member received. */
const payloads = (member: Member, event: string) =>
  member.events.filter(([name]) => name === event).map(([, payload]) => payload)

/** The chat, in process, on a free port. */
const startChat = Effect.gen(function*() {
  const context = yield* Layer.build(ChatServer.layer({ host: "127.0.0.1", port: 0 }))
  const address = Context.get(context, HttpServer.HttpServer).address
  if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
  return { port: address.port, base: `http://127.0.0.1:${address.port}` }
})

const fetchEffect = (url: string, init?: RequestInit) => Effect.promise(() => fetch(url, init))

describe("the chat's HTTP contract", () => {
  it.scopedLive("PUT /broadcast {user, body} reaches every member as new:msg and answers {connected: N}", () =>
    Effect.gen(function*() {
      const { base, port } = yield* startChat
      const ada = yield* lobby(port, { user: "ada" })
      const bob = yield* lobby(port, {})
      const response = yield* fetchEffect(`${base}/broadcast`, {
        method: "PUT",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user: "system", body: "hello" })
      })
      expect(response.status).toBe(200)
      expect(yield* Effect.promise(() => response.json())).toEqual({ connected: 2 })
      for (const member of [ada, bob]) {
        yield* until(() => payloads(member, "new:msg").length === 1, "new:msg")
        expect(payloads(member, "new:msg")).toEqual([{ user: "system", body: "hello" }])
      }
      // Not a {user, body} object: 400, nothing broadcast.
      for (const body of ["{}", "not json", JSON.stringify({ user: "x", body: 1 })]) {
        const invalid = yield* fetchEffect(`${base}/broadcast`, { method: "PUT", body })
        expect(invalid.status).toBe(400)
      }
      const after = yield* fetchEffect(`${base}/broadcast`, {
        method: "PUT",
        body: JSON.stringify({ user: "system", body: "again" })
      })
      expect(yield* Effect.promise(() => after.json())).toEqual({ connected: 2 })
      yield* until(() => payloads(ada, "new:msg").length === 2, "the second new:msg")
      expect(payloads(ada, "new:msg")).toEqual([{ user: "system", body: "hello" }, { user: "system", body: "again" }])
    }))

  it.scopedLive("PUT /broadcast past maxBodySize (64 KiB) is 413, without a Content-Length 411; nothing is broadcast", () =>
    Effect.gen(function*() {
      const { base, port } = yield* startChat
      const ada = yield* lobby(port, { user: "ada" })
      const put = (body: BodyInit, init: RequestInit = {}) =>
        fetchEffect(`${base}/broadcast`, { method: "PUT", headers: { "content-type": "application/json" }, body, ...init })
      const envelope = JSON.stringify({ user: "system", body: "" }).length
      const atLimit = JSON.stringify({ user: "system", body: "x".repeat(ChatServer.maxBodySize - envelope) })
      expect((yield* put(atLimit)).status).toBe(200)
      const over = JSON.stringify({ user: "system", body: "x".repeat(ChatServer.maxBodySize - envelope + 1) })
      expect((yield* put(over)).status).toBe(413)
      // 10 MiB, declared.
      const huge = yield* put(JSON.stringify({ user: "system", body: "x".repeat(10 * 1024 * 1024) }))
      expect(huge.status).toBe(413)
      // Chunked, no length: refused before it is read.
      const chunks = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(new TextEncoder().encode(over))
          controller.close()
        }
      })
      const chunked = yield* put(chunks, { duplex: "half" } as RequestInit)
      expect(chunked.status).toBe(411)
      yield* until(() => payloads(ada, "new:msg").length === 1, "the broadcast at the limit")
      // Only the body at the limit went out, even after a later one.
      expect((yield* put(JSON.stringify({ user: "system", body: "last" }))).status).toBe(200)
      yield* until(() => payloads(ada, "new:msg").length === 2, "the last broadcast")
      expect(payloads(ada, "new:msg").map((payload) => (payload as { body: string }).body.length)).toEqual([
        ChatServer.maxBodySize - envelope,
        4
      ])
    }))

  it.scopedLive("GET / serves the page, GET /phoenix.js the official client, /favicon.ico and /favicon.svg the icon", () =>
    Effect.gen(function*() {
      const { base } = yield* startChat
      const page = yield* fetchEffect(`${base}/`)
      expect(page.status).toBe(200)
      expect(page.headers.get("content-type")).toMatch(/^text\/html/)
      const html = yield* Effect.promise(() => page.text())
      expect(html).toBe(readFileSync(Path.join(packageDir, "public/index.html"), "utf8"))
      expect(html).toContain(`<script src="/phoenix.js"></script>`)
      const script = yield* fetchEffect(`${base}/phoenix.js`)
      expect(script.status).toBe(200)
      expect(script.headers.get("content-type")).toMatch(/^text\/javascript/)
      const phoenixMin = Path.join(Path.dirname(createRequire(import.meta.url).resolve("phoenix")), "phoenix.min.js")
      expect(yield* Effect.promise(() => script.text())).toBe(readFileSync(phoenixMin, "utf8"))
      for (const path of ["/favicon.ico", "/favicon.svg"]) {
        const icon = yield* fetchEffect(`${base}${path}`)
        expect(icon.status).toBe(200)
        expect(icon.headers.get("content-type")).toBe("image/svg+xml")
        expect(yield* Effect.promise(() => icon.text())).toBe(readFileSync(Path.join(packageDir, "public/favicon.svg"), "utf8"))
      }
      expect((yield* fetchEffect(`${base}/nowhere`)).status).toBe(404)
    }))

  it.scopedLive("a join to any other topic is refused with {reason: \"unauthorized\"}", () =>
    Effect.gen(function*() {
      const { port } = yield* startChat
      const ada = yield* lobby(port, { user: "ada" })
      const refused = yield* Effect.flip(join(port, "rooms:secret", { user: "eve" }))
      expect(refused).toEqual({ reason: "unauthorized" })
      // Nobody heard of the refused member.
      yield* until(() => payloads(ada, "user:entered").length === 1, "ada's own user:entered")
      const bob = yield* lobby(port, { user: "bob" })
      yield* until(() => payloads(ada, "user:entered").length === 2, "bob's user:entered")
      expect(payloads(ada, "user:entered")).toEqual([{ user: "ada" }, { user: "bob" }])
      expect(payloads(bob, "user:entered")).toEqual([{ user: "bob" }])
    }))

  it.scopedLive("user:entered carries the join's user param, or null without one", () =>
    Effect.gen(function*() {
      const { port } = yield* startChat
      const ada = yield* lobby(port, { user: "ada" })
      yield* until(() => payloads(ada, "user:entered").length === 1, "ada's own user:entered")
      expect(payloads(ada, "user:entered")).toEqual([{ user: "ada" }])
      const anonymous = yield* lobby(port, {})
      yield* until(() => payloads(ada, "user:entered").length === 2, "the anonymous user:entered")
      expect(payloads(ada, "user:entered")).toEqual([{ user: "ada" }, { user: null }])
      yield* until(() => payloads(anonymous, "user:entered").length === 1, "the anonymous member's own user:entered")
      expect(payloads(anonymous, "user:entered")).toEqual([{ user: null }])
      // A user that is not a string is no user.
      yield* lobby(port, { user: 42 })
      yield* until(() => payloads(ada, "user:entered").length === 3, "the third user:entered")
      expect(payloads(ada, "user:entered")[2]).toEqual({ user: null })
    }))
})

interface Server {
  readonly child: ChildProcess
  readonly port: number
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<{ readonly code: number | null; readonly signal: NodeJS.Signals | null }>
}

/**
 * Runs `entry` (relative to the package) with `node --import tsx` (on the
 * workspace packages' sources: the `@effect-channels/source` condition), on a free
 * port (PORT=0: the port is read from the "Listening on" log line); killed
 * with the scope if still running.
 */
const spawnServer = (entry: string): Effect.Effect<Server, never, Scope.Scope> =>
  Effect.acquireRelease(
    bounded(
      Effect.async<Server>((resume) => {
        // The workspace packages from their sources, as `pnpm start` runs them: no build needed.
        const child = spawn(process.execPath, ["--conditions=@effect-channels/source", "--import", "tsx", entry], {
          cwd: packageDir,
          env: { ...process.env, PORT: "0", HOST: "127.0.0.1" },
          stdio: ["ignore", "pipe", "pipe"]
        })
        let stdout = ""
        let stderr = ""
        let started = false
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
          child.once("exit", (code, signal) => resolve({ code, signal }))
        )
        child.stderr!.on("data", (data) => (stderr += String(data)))
        child.stdout!.on("data", (data) => {
          stdout += String(data)
          const listening = /Listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(stdout)
          if (listening === null || started) return
          started = true
          resume(Effect.succeed({ child, port: Number(listening[1]), stdout: () => stdout, stderr: () => stderr, exited }))
        })
        void exited.then(({ code }) => {
          if (!started) resume(Effect.dieMessage(`${entry} exited with ${code} before listening:\n${stdout}\n${stderr}`))
        })
        return Effect.sync(() => child.kill("SIGKILL"))
      }),
      `${entry} to listen`,
      20_000
    ),
    ({ child }) =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
      })
  )

/** Sends SIGTERM; the exit and how long it took. */
const terminate = (server: Server) =>
  Effect.gen(function*() {
    const start = Date.now()
    server.child.kill("SIGTERM")
    const exit = yield* bounded(Effect.promise(() => server.exited), "the exit after SIGTERM", 10_000)
    return { ...exit, millis: Date.now() - start }
  })

describe("shutdown on SIGTERM under NodeRuntime.runMain", () => {
  it.scopedLive("every client is closed with 1001, each disconnect runs once, the process exits 0", () =>
    Effect.gen(function*() {
      // The chat's layers plus a disconnect hook that writes "disconnect <user>" to stdout.
      const server = yield* spawnServer("test/fixtures/server.ts")
      const ada = yield* lobby(server.port, { user: "ada" })
      const bob = yield* lobby(server.port, { user: "bob" })
      const exit = yield* terminate(server)
      expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
      expect(exit.millis).toBeLessThan(5000)
      expect(ada.closes).toEqual([1001])
      expect(bob.closes).toEqual([1001])
      const lines = server.stdout().split("\n").filter((line) => line.startsWith("disconnect"))
      expect(lines.sort()).toEqual(["disconnect ada", "disconnect bob"])
      expect(server.stderr()).toBe("")
    }), 30_000)

  it.scopedLive("the shipped entry, src/main.ts, shuts down the same way", () =>
    Effect.gen(function*() {
      const server = yield* spawnServer("src/main.ts")
      const ada = yield* lobby(server.port, { user: "ada" })
      const anonymous = yield* lobby(server.port, {})
      // A connection that has not sent a request yet (browsers open them ahead of need) does not hold
      // the shutdown.
      const unused = yield* Effect.acquireRelease(
        Effect.async<Net.Socket>((resume) => {
          const socket = Net.connect(server.port, "127.0.0.1", () => resume(Effect.succeed(socket)))
        }),
        (socket) => Effect.sync(() => socket.destroy())
      )
      const exit = yield* terminate(server)
      expect({ code: exit.code, signal: exit.signal }).toEqual({ code: 0, signal: null })
      expect(exit.millis).toBeLessThan(5000)
      expect(ada.closes).toEqual([1001])
      expect(anonymous.closes).toEqual([1001])
      expect(unused.destroyed || unused.readableEnded).toBe(true)
      expect(server.stderr()).toBe("")
    }), 30_000)
})
