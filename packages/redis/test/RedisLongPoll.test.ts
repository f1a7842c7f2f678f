/**
 * Long-poll sessions across two nodes on Redis, no sticky sessions: the
 * official phoenix client on `LongPoll` behind a round-robin proxy, so that
 * its requests alternate between the nodes.
 */
import { ChannelHandler, Presence } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import { describe, expect, it } from "@effect/vitest"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { createServer, request as httpRequest } from "node:http"
import type { AddressInfo } from "node:net"
import { LongPoll, Presence as ClientPresence, Socket } from "phoenix"
import WebSocket from "ws"
import { RedisBroker, RedisLongPoll, RedisPresence } from "../src/index.js"
import { uniquePrefix } from "./utils/node.js"
import { join, next, push } from "./utils/phoenixClient.js"

const secret = "a secret every node shares"

/** Joins track the `user` connect parameter; `echo` replies its payload; `shout` broadcasts it. */
const Lobby = ChannelHandler.layer({
  connect: (info) => Effect.succeed({ assigns: { user: info.params["user"] ?? "?" } }),
  join: (conn) =>
    Effect.gen(function*() {
      const presence = yield* Presence.Presence
      yield* presence.track(conn, conn.topic, String(conn.socket.assigns["user"]), {})
      return conn.allowJoin()
    }),
  incoming: (conn, event) => {
    switch (event.event) {
      case "echo":
        return conn.reply(event, "ok", event.payload)
      case "shout":
        return Effect.zipRight(conn.broadcast("shout", event.payload), conn.reply(event, "ok", {}))
      default:
        return Effect.void
    }
  }
})

interface Node {
  readonly port: number
  readonly socketUrl: string
  readonly stop: Effect.Effect<void>
}

const startNode = (prefix: string): Effect.Effect<Node, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const served = HttpServer.serve(HttpRouter.empty).pipe(
      Layer.provideMerge(
        NodeChannelServer.layer(createServer, { port: 0, host: "127.0.0.1" }, { longPoll: { secret, window: "2 seconds" } })
      ),
      Layer.provide(RedisLongPoll.layer({ prefix })),
      Layer.provide(Lobby),
      Layer.provide(RedisPresence.layerPresence({ prefix, batchWindow: "20 millis" })),
      Layer.provide(RedisBroker.layerBroadcaster({ prefix }))
    )
    const context = yield* Layer.buildWithScope(served, scope).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      port: address.port,
      socketUrl: `ws://127.0.0.1:${address.port}/socket`,
      stop: Scope.close(scope, Exit.void)
    }
  })

interface Proxy {
  readonly socketUrl: string
  /** The nodes requests go to, in turn. */
  targets: Array<Node>
  /** The long-poll requests each node received through the proxy: `<port> <method>`. */
  readonly served: Array<string>
}

/** A round-robin HTTP proxy in front of `targets`: each request goes to the next node. */
const startProxy = (targets: Array<Node>): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let turn = 0
    const served: Array<string> = []
    const server = createServer((incoming, outgoing) => {
      const target = proxy.targets[turn++ % proxy.targets.length]!
      if (incoming.url?.includes("token=") === true) served.push(`${target.port} ${incoming.method}`)
      const forwarded = httpRequest(
        { host: "127.0.0.1", port: target.port, path: incoming.url, method: incoming.method, headers: incoming.headers },
        (response) => {
          outgoing.writeHead(response.statusCode ?? 502, response.headers)
          response.pipe(outgoing)
        }
      )
      forwarded.on("error", () => {
        if (!outgoing.headersSent) outgoing.writeHead(502)
        outgoing.end()
      })
      incoming.pipe(forwarded)
    })
    yield* Effect.acquireRelease(
      Effect.async<void>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.void))
      }),
      () =>
        Effect.async<void>((resume) => {
          server.closeAllConnections()
          server.close(() => resume(Effect.void))
        })
    )
    const port = (server.address() as AddressInfo).port
    const proxy: Proxy = { socketUrl: `ws://127.0.0.1:${port}/socket`, targets, served }
    return proxy
  })

const longPollSocket = (url: string, user: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = new Socket(url, { transport: LongPoll as never, params: { user }, timeout: 5000 })
      socket.connect()
      return socket
    }),
    (socket) => Effect.sync(() => socket.disconnect())
  )

const wsSocket = (url: string, user: string) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = new Socket(url, { transport: WebSocket, params: { user } })
      socket.connect()
      return socket
    }),
    (socket) => Effect.sync(() => socket.disconnect())
  )

/** Waits until `check` holds, up to `timeout` ms. */
const eventually = (check: () => boolean, what: string, timeout = 8000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeout
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

/** Joins `topic`, watching it with the client's `Presence` from before the join (it misses no state). */
const joinWatching = (socket: Socket, topic: string) =>
  Effect.gen(function*() {
    const channel = socket.channel(topic, {})
    const presence = new ClientPresence(channel)
    yield* Effect.async<void>((resume) => {
      channel.join().receive("ok", () => resume(Effect.void))
    }).pipe(Effect.timeout("8 seconds"), Effect.orDie)
    return [channel, () => presence.list((key) => key).sort().join(",")] as const
  })

/** The long-poll session token of a socket on `LongPoll`. */
const tokenOf = (socket: Socket) => (socket as unknown as { conn: { token: string | null } }).conn.token

const pollRaw = (url: string) =>
  Effect.promise(async () => (await (await fetch(url)).json()) as { status: number })

describe("RedisLongPoll", () => {
  it.scopedLive("a session whose requests alternate between two nodes joins, pushes, gets replies, broadcasts and presence", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("lp")
      const a = yield* startNode(prefix)
      const b = yield* startNode(prefix)
      const proxy = yield* startProxy([a, b])

      const lp = yield* longPollSocket(proxy.socketUrl, "lp")
      const [lpChannel, lpView] = yield* joinWatching(lp, "rooms:lobby")
      const ws = yield* wsSocket(b.socketUrl, "ws")
      const [wsChannel, wsView] = yield* joinWatching(ws, "rooms:lobby")

      // Replies, in order, whichever node each POST and poll reached.
      for (let n = 0; n < 6; n++) {
        expect(yield* push(lpChannel, "echo", { n }, 8000)).toEqual(["ok", { n }])
      }
      // Broadcasts from a WebSocket client on the other node, in order.
      const shouts: Array<unknown> = []
      lpChannel.on("shout", (payload: unknown) => {
        shouts.push(payload)
      })
      for (let n = 0; n < 10; n++) wsChannel.push("shout", { n })
      yield* eventually(() => shouts.length === 10, "the 10 shouts on long-poll")
      expect(shouts).toEqual(Array.from({ length: 10 }, (_, n) => ({ n })))
      // And the other way.
      const heard = next(wsChannel, "shout", 8000)
      lpChannel.push("shout", { from: "lp" })
      expect(yield* heard).toEqual({ from: "lp" })
      // Presence: both clients see both, whichever node tracked them.
      yield* eventually(() => lpView() === "lp,ws" && wsView() === "lp,ws", "both presences on both clients")

      // One session all along, its polls and POSTs on both nodes.
      expect(tokenOf(lp)).not.toBeNull()
      for (const node of [a, b]) {
        expect(proxy.served).toContain(`${node.port} GET`)
        expect(proxy.served).toContain(`${node.port} POST`)
      }
    }), 60_000)

  it.scopedLive("polls on the other node keep the session alive; its owner stopped, it is gone (410) and the client rejoins through the other node", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("lp-owner")
      const a = yield* startNode(prefix)
      const b = yield* startNode(prefix)
      // The session opens on `a`; then every request reaches `b` alone.
      const proxy = yield* startProxy([a])
      const lp = yield* longPollSocket(proxy.socketUrl, "lp")
      const [lpChannel] = yield* join(lp, "rooms:lobby", {}, 8000)
      const token = tokenOf(lp)
      expect(token).not.toBeNull()
      proxy.targets = [b]
      const before = proxy.served.length

      // 3 windows (the session would end after 1.5 without a poll on `a`).
      yield* Effect.sleep("6 seconds")
      const polls = proxy.served.slice(before)
      expect(polls.filter((served) => served === `${b.port} GET`).length).toBeGreaterThanOrEqual(2)
      expect(polls.every((served) => served.startsWith(`${b.port} `))).toBe(true)
      expect(tokenOf(lp)).toBe(token)
      expect(yield* push(lpChannel, "echo", { still: "here" }, 8000)).toEqual(["ok", { still: "here" }])
      expect(tokenOf(lp)).toBe(token)

      // The owner stops: its session is gone wherever it is polled.
      const rejoined = Effect.async<void>((resume) => {
        const ref = lp.onOpen(() => {
          lp.off([ref])
          resume(Effect.void)
        })
      })
      yield* a.stop
      const raw = yield* pollRaw(`http://127.0.0.1:${b.port}/socket/longpoll?vsn=2.0.0&token=${encodeURIComponent(token!)}`)
      expect(raw.status).toBe(410)
      yield* rejoined.pipe(Effect.timeout("20 seconds"), Effect.orDie)
      yield* eventually(() => lpChannel.state === "joined" && tokenOf(lp) !== token, "the rejoin on a new session", 20_000)
      expect(yield* push(lpChannel, "echo", { n: "after" }, 8000)).toEqual(["ok", { n: "after" }])
      expect(proxy.served.slice(before).every((served) => served.startsWith(`${b.port} `))).toBe(true)
    }), 60_000)

  it.scopedLive("a relayed poll whose client goes away is cancelled on the owner: it takes no messages", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("lp-cancel")
      const a = yield* startNode(prefix)
      const b = yield* startNode(prefix)
      const endpoint = (node: Node) => `http://127.0.0.1:${node.port}/socket/longpoll?vsn=2.0.0`
      const opened = (yield* pollRaw(endpoint(a))) as { status: number; token: string }
      expect(opened.status).toBe(410)
      const url = (node: Node) => `${endpoint(node)}&token=${encodeURIComponent(opened.token)}`
      // A poll through `b` that its client abandons while it waits on `a`.
      const controller = new AbortController()
      const abandoned = fetch(url(b), { signal: controller.signal }).catch(() => "aborted")
      yield* Effect.sleep("200 millis")
      controller.abort()
      expect(yield* Effect.promise(() => abandoned)).toBe("aborted")
      yield* Effect.sleep("300 millis")
      // The heartbeat's reply, queued on `a`, is there for the next poll.
      const posted = yield* Effect.promise(async () =>
        (await (await fetch(url(b), {
          method: "POST",
          headers: { "content-type": "application/x-ndjson" },
          body: JSON.stringify([null, "hb", "phoenix", "heartbeat", {}])
        })).json()) as { status: number; handled: number }
      )
      expect(posted).toEqual({ status: 200, handled: 1 })
      const polled = (yield* pollRaw(url(b))) as { status: number; messages: Array<string> }
      expect(polled.status).toBe(200)
      expect(polled.messages.map((message) => JSON.parse(message))).toEqual([
        [null, "hb", "phoenix", "phx_reply", { status: "ok", response: {} }]
      ])
    }), 60_000)

  it.scoped("options that cannot work fail the layer with every problem listed", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(RedisLongPoll.make({ url: "http://127.0.0.1:6379", prefix: "a b", nodeId: "" }))
      expect(error._tag).toBe("RedisLongPollConfigError")
      expect(error.problems).toHaveLength(3)
      expect(error.message).toContain("url must be a redis:// or rediss:// URL")
    }))
})
