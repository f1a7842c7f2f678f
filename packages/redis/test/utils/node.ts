/**
 * A node of the cluster in this process: the test channel served by
 * `NodeChannelServer` on an ephemeral port, over the Redis broker.
 */
import { Broker, ChannelBroadcaster, ChannelHistory } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import * as Exit from "effect/Exit"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import { createServer } from "node:http"
import { ClusterConnections, RedisBroker } from "../../src/index.js"
import { Rooms } from "./handler.js"

export interface TestNode {
  readonly socketUrl: string
  readonly broadcaster: ChannelBroadcaster.Service
  readonly broker: Broker.Service
  readonly node: RedisBroker.Service
  readonly cluster: ClusterConnections.Service
  /** Stops the node now (its connections close), as its scope would. */
  readonly stop: Effect.Effect<void>
}

/** The histories of a node's topics, if it keeps any (see `ChannelHistory.layer`). */
export type Histories = Readonly<Record<string, ChannelHistory.TopicOptions>>

/** A layer serving the test channel on `port` (0: any free one) over Redis, with `histories` kept in Redis. */
export const layer = (options: RedisBroker.Options, port = 0, histories: Histories = {}) =>
  HttpServer.serve(HttpRouter.empty).pipe(
    Layer.provideMerge(NodeChannelServer.layer(createServer, { port, host: "127.0.0.1" })),
    Layer.provideMerge(Rooms),
    Layer.provideMerge(RedisBroker.layerBroadcaster(options).pipe(Layer.provide(ChannelHistory.layer(histories))))
  )

/** Starts a node for the life of the scope (or until `stop`). */
export const start = (options: RedisBroker.Options, histories: Histories = {}): Effect.Effect<TestNode, never, Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    const scope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const context = yield* Layer.buildWithScope(layer(options, 0, histories), scope).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      socketUrl: `ws://127.0.0.1:${address.port}/socket`,
      broadcaster: Context.get(context, ChannelBroadcaster.ChannelBroadcaster),
      broker: Context.get(context, Broker.Broker),
      node: Context.get(context, RedisBroker.RedisBroker),
      cluster: Context.get(context, ClusterConnections.ClusterConnections),
      stop: Scope.close(scope, Exit.void)
    }
  })

let prefixes = 0
/** A prefix of its own for each test, so that tests share the Redis on 6379 without hearing each other. */
export const uniquePrefix = (name: string) => `test-${process.pid}-${Date.now().toString(36)}-${++prefixes}-${name}`
