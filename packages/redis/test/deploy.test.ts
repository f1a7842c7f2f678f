/**
 * A deploy loses nothing on a topic with a history: node A shuts down under
 * load and drains its connections in batches; its clients, behind a load
 * balancer, reconnect to node B, rejoin with their last position and
 * recover. Every client ends with every broadcast exactly once, in order.
 */
import { ChannelBroadcaster, ChannelHistory } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { createServer } from "node:http"
import { Socket } from "phoenix"
import WebSocket from "ws"
import * as TcpProxy from "../../integration/test/utils/tcpProxy.js"
import { RedisBroker } from "../src/index.js"
import { Rooms } from "./utils/handler.js"
import { eventually } from "./utils/members.js"
import { uniquePrefix } from "./utils/node.js"

const topic = "rooms:deploy"
const total = 200

/** A node with a history for `rooms:*`, drained on shutdown in batches of 4, one every 100 ms. */
const startNode = (prefix: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const layer = HttpServer.serve(HttpRouter.empty).pipe(
      Layer.provideMerge(NodeChannelServer.layer(createServer, { port: 0, host: "127.0.0.1" }, {
        drain: { batchSize: 4, batchInterval: "100 millis", shutdown: "5 seconds" },
        logLevel: false
      })),
      Layer.provideMerge(Rooms),
      Layer.provideMerge(RedisBroker.layerBroadcaster({ url: "redis://127.0.0.1:6379", prefix })),
      Layer.provide(Layer.orDie(ChannelHistory.layer({ "rooms:*": { size: 1000, ttl: "1 minute" } })))
    )
    const context = yield* Layer.buildWithScope(layer, scope).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      port: address.port,
      broadcaster: Context.get(context, ChannelBroadcaster.ChannelBroadcaster),
      stop: Scope.close(scope, Exit.void)
    }
  })

/** A client of the topic that tracks its position as the phoenix client allows: join params as a function. */
const client = (port: number) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const state = { seen: [] as Array<number>, joins: [] as Array<boolean>, closes: [] as Array<number>, position: undefined as string | undefined }
      const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, reconnectAfterMs: () => 50 })
      socket.onClose(() => {
        state.closes.push(Date.now())
      })
      socket.connect()
      const channel = socket.channel(topic, () => (state.position === undefined ? {} : { _position: state.position }))
      // The position is the broadcast's ref, which phoenix gives to `onMessage` (and to `on` callbacks).
      channel.onMessage = (event: string, payload: unknown, ref: unknown) => {
        if (event === "shout") {
          state.seen.push((payload as { readonly n: number }).n)
          if (typeof ref === "string") state.position = ref
        }
        return payload
      }
      channel.join().receive("ok", (reply: { readonly _position: string; readonly _recovered: boolean }) => {
        state.joins.push(reply._recovered)
        state.position = reply._position
      })
      return { socket, state }
    }),
    ({ socket }) => Effect.sync(() => socket.disconnect())
  )

describe("a deploy on a topic with a history", () => {
  it.scopedLive("the clients a node drains reconnect to another, recover, and have every broadcast once, in order", () =>
    Effect.gen(function*() {
      const prefix = uniquePrefix("deploy")
      const a = yield* startNode(prefix)
      const b = yield* startNode(prefix)
      // The load balancer: new connections to A until the deploy, then to B.
      const lb = yield* TcpProxy.start(a.port)
      const clients = yield* Effect.forEach(Array.from({ length: 12 }), () => client(lb.port))
      yield* eventually(() => clients.every(({ state }) => state.joins.length === 1), "every client joined on A")

      const sending = yield* Effect.fork(Effect.forEach(
        Array.from({ length: total }, (_, i) => i + 1),
        (n) => Effect.zipRight(Effect.orDie(b.broadcaster.broadcast(topic, "shout", { n })), Effect.sleep("5 millis")),
        { discard: true }
      ))
      yield* eventually(() => clients.every(({ state }) => state.seen.length >= 40), "40 broadcasts on A")
      // The deploy: A takes no new connection, and drains those it has.
      yield* lb.retarget(b.port)
      yield* a.stop
      yield* eventually(
        () => clients.every(({ state }) => state.seen.length >= total),
        `${total} broadcasts on every client`,
        15_000
      )
      yield* sending.await
      for (const { state } of clients) {
        expect(state.seen).toEqual(Array.from({ length: total }, (_, i) => i + 1))
        // The first join had nothing to recover; the rejoin on B recovered.
        expect(state.joins).toEqual([false, true])
      }
      // Closed in batches of 4, 100 ms apart: three batches for twelve clients.
      const closes = clients.map(({ state }) => state.closes[0]!).sort((x, y) => x - y)
      expect(closes.at(-1)! - closes[0]!).toBeGreaterThanOrEqual(150)
    }), 30_000)
})
