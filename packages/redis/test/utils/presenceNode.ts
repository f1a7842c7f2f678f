/**
 * Nodes for the presence tests: a Node HTTP server on an ephemeral port with a
 * channel that tracks its joiners, presence on `RedisPresence`, and the
 * official `phoenix` client with its `Presence` class to watch them.
 */
import { Broker, ChannelBroadcaster, ChannelHandler, Presence } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { spawn } from "node:child_process"
import { createServer } from "node:http"
import { fileURLToPath } from "node:url"
import { type Channel, Presence as ClientPresence, Socket } from "phoenix"
import WebSocket from "ws"
import { RedisPresence } from "../../src/index.js"

interface JoinParams {
  /** The key to track under; none: the client only watches. */
  readonly user?: string
  readonly meta?: Presence.Meta
  /** Track with a meta that JSON cannot carry (a BigInt), and watch the topic without tracking. */
  readonly unencodable?: boolean
}

/**
 * Joins track `user` with `meta`, or push the state to a watcher; `update`
 * replaces the meta, `untrack` removes the entry. `unencodable` tracks a meta
 * with a BigInt in another topic (no client of it could decode it).
 */
const Tracked = ChannelHandler.layer({
  join: (conn, event) =>
    Effect.gen(function*() {
      const { meta = {}, unencodable, user } = event.payload as JoinParams
      const presence = yield* Presence.Presence
      if (unencodable === true) {
        yield* presence.track(conn, `${conn.topic}:hidden`, user ?? "", { big: 1n })
        yield* presence.pushState(conn)
      } else if (user !== undefined) yield* presence.track(conn, conn.topic, user, meta)
      else yield* presence.pushState(conn)
      return conn.allowJoin()
    }),
  incoming: (conn, event) =>
    Effect.gen(function*() {
      const presence = yield* Presence.Presence
      const { meta = {}, user = "" } = event.payload as JoinParams
      switch (event.event) {
        case "update":
          return yield* presence.update(conn, conn.topic, user, meta).pipe(
            Effect.flatMap((ref) => conn.reply(event, "ok", { ref })),
            Effect.catchTag("NotTracked", () => conn.reply(event, "error", { reason: "not tracked" }))
          )
        case "untrack":
          return yield* Effect.zipRight(presence.untrack(conn, conn.topic, user), conn.reply(event, "ok"))
      }
    })
})

export interface NodeOptions extends RedisPresence.Options {
  readonly batchWindow?: Presence.Options["batchWindow"]
  /** A broker shared with other nodes (a broker that spans them); default one of the node's own. */
  readonly broker?: Broker.Service
}

export interface PresenceNode {
  readonly socketUrl: string
  /** Stops the node cleanly (its scope closes): its clients are closed, it says goodbye. */
  readonly stop: Effect.Effect<void>
}

/** The layers of a node, without the HTTP server. */
export const nodeLayer = (options: NodeOptions) => {
  const broker = options.broker === undefined ? Broker.layerLocal : Layer.succeed(Broker.Broker, options.broker)
  return Tracked.pipe(
    Layer.provide(RedisPresence.layerPresence(options)),
    Layer.provideMerge(ChannelBroadcaster.layer),
    Layer.provideMerge(broker)
  )
}

/** Serves the layers of a node on an ephemeral port, in `scope`. */
export const serve = (options: NodeOptions, scope: Scope.Scope) =>
  Effect.gen(function*() {
    const served = HttpServer.serve(HttpRouter.empty).pipe(
      Layer.provideMerge(NodeChannelServer.layer(createServer, { port: 0, host: "127.0.0.1" })),
      Layer.provide(nodeLayer(options))
    )
    const context = yield* Layer.buildWithScope(served, scope)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return `ws://127.0.0.1:${address.port}/socket`
  })

/** A node in this process, stopped with the scope if not before. */
export const startNode = (options: NodeOptions): Effect.Effect<PresenceNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const socketUrl = yield* Effect.orDie(serve(options, scope))
    return { socketUrl, stop: Scope.close(scope, Exit.void) }
  })

/** What a client's `Presence` shows: key to the sorted contents of its metas, refs apart. */
export type View = Record<string, Array<string>>

export interface Client {
  readonly socket: Socket
  readonly channel: Channel
  /** The state as the client's `Presence` holds it. */
  readonly state: () => Presence.State
  readonly view: () => View
  /** Every diff the channel received, in order. */
  readonly diffs: Array<Presence.Diff>
}

const content = ({ phx_ref: _ref, phx_ref_prev: _prev, ...meta }: Presence.TrackedMeta) => JSON.stringify(meta)

export const viewOf = (state: Presence.State): View =>
  Object.fromEntries(
    Object.entries(state).map(([key, { metas }]) => [key, metas.map(content).sort()] as const)
      .sort(([a], [b]) => a.localeCompare(b))
  )

/** A `phoenix` client joined to `topic` on the node, watching presence; disconnected with the scope. */
export const connect = (
  socketUrl: string,
  topic: string,
  params: JoinParams = {}
): Effect.Effect<Client, never, Scope.Scope> =>
  Effect.gen(function*() {
    const socket = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const socket = new Socket(socketUrl, { transport: WebSocket, reconnectAfterMs: () => 60_000 })
        socket.connect()
        return socket
      }),
      (socket) => Effect.sync(() => socket.disconnect())
    )
    const channel = socket.channel(topic, params)
    const presence = new ClientPresence(channel)
    const diffs: Array<Presence.Diff> = []
    channel.on("presence_diff", (diff: Presence.Diff) => void diffs.push(diff))
    yield* Effect.async<void>((resume) => {
      channel.join()
        .receive("ok", () => resume(Effect.void))
        .receive("error", (reason: unknown) => resume(Effect.dieMessage(`join refused: ${JSON.stringify(reason)}`)))
        .receive("timeout", () => resume(Effect.dieMessage(`join of ${topic} timed out`)))
    })
    const state = () =>
      Object.fromEntries(
        presence.list((key: string, { metas }: { metas: Array<Presence.TrackedMeta> }) => [key, { metas }] as const)
      ) as Presence.State
    return { socket, channel, state, view: () => viewOf(state()), diffs }
  })

/** Pushes and waits for an `ok` reply. */
export const request = (client: Client, event: string, payload: JoinParams) =>
  Effect.async<unknown>((resume) => {
    client.channel.push(event, payload)
      .receive("ok", (response: unknown) => resume(Effect.succeed(response)))
      .receive("error", (response: unknown) => resume(Effect.dieMessage(`${event}: ${JSON.stringify(response)}`)))
      .receive("timeout", () => resume(Effect.dieMessage(`${event} timed out`)))
  })

/** Waits (real time) until `check` holds, or dies with what it last saw. */
export const eventually = <A>(
  observe: () => A,
  check: (value: A) => boolean,
  timeout = 5000,
  what = "condition"
) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeout
    while (true) {
      const value = observe()
      if (check(value)) return value
      if (Date.now() > deadline) {
        return yield* Effect.failCause(Cause.die(new Error(`${what} not met in ${timeout} ms; last: ${JSON.stringify(value)}`)))
      }
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 20)))
    }
  })

/** Every client's view equals `expected`. */
export const converged = (clients: ReadonlyArray<Client>, expected: View, timeout = 5000) =>
  eventually(
    () => clients.map((client) => client.view()),
    (views) => views.every((view) => JSON.stringify(view) === JSON.stringify(expected)),
    timeout,
    `every view is ${JSON.stringify(expected)}`
  )

/** A prefix no other test uses. */
export const uniquePrefix = (name: string) => `test-presence-${name}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`

export interface ChildNode {
  readonly socketUrl: string
  readonly kill: (signal: NodeJS.Signals) => Effect.Effect<void>
}

/** A node in a child process (`presenceChild.ts`), killed with SIGKILL at the end of the scope if still running. */
export const startChildNode = (options: NodeOptions): Effect.Effect<ChildNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const root = fileURLToPath(new URL("../../../..", import.meta.url))
    const script = fileURLToPath(new URL("./presenceChild.ts", import.meta.url))
    const child = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(process.execPath, ["--import", "tsx", "--conditions=@effect-channels/source", script, JSON.stringify(options)], {
          cwd: root,
          stdio: ["ignore", "pipe", "inherit"]
        })
      ),
      (child) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
    )
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
    const socketUrl = yield* Effect.async<string>((resume) => {
      let output = ""
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString("utf8")
        const ready = /READY (\S+)\n/.exec(output)
        if (ready !== null) resume(Effect.succeed(ready[1]!))
      })
      child.once("exit", (code, signal) => resume(Effect.dieMessage(`the child node exited (${code ?? signal}) before it served`)))
    }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the child node did not start") }), Effect.orDie)
    return {
      socketUrl,
      kill: (signal) => Effect.zipRight(Effect.sync(() => child.kill(signal)), Effect.promise(() => exited))
    }
  })
