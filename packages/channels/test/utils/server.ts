/**
 * Test servers: the socket on a real Node HTTP server, on an ephemeral port.
 */
import { Broker, ChannelBroadcaster, ChannelSocket } from "@effect-channels/core"
import type { ChannelHandler } from "@effect-channels/core/ChannelHandler"
import { NodeWebSocketServer } from "@effect-channels/node"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { createServer } from "node:http"

export interface TestServer {
  readonly port: number
  /** `ws://127.0.0.1:<port>/socket` (append `/websocket`, or give it to the phoenix client). */
  readonly socketUrl: string
  readonly broadcaster: ChannelBroadcaster.Service
  readonly broker: Broker.Service
}

/**
 * Serves `handler` at `/socket` for the life of the scope. `transport`
 * "node" uses the `ws` server of `@effect-channels/node`; "platform" the
 * portable one of the core package.
 */
export const startServer = (
  handler: Layer.Layer<ChannelHandler>,
  options: ChannelSocket.Options & { readonly transport?: "node" | "platform" } = {}
): Effect.Effect<TestServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { transport = "node", ...socketOptions } = options
    const services = Layer.mergeAll(
      handler,
      ChannelBroadcaster.layerLocal,
      transport === "node" ? NodeWebSocketServer.layer : Layer.empty
    )
    const server = NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" })
    const app = HttpServer.serve(ChannelSocket.router(socketOptions))
    const context = yield* Layer.build(
      Layer.provideMerge(app, Layer.provideMerge(services, server))
    ).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      port: address.port,
      socketUrl: `ws://127.0.0.1:${address.port}/socket`,
      broadcaster: Context.get(context, ChannelBroadcaster.ChannelBroadcaster),
      broker: Context.get(context, Broker.Broker)
    }
  })
