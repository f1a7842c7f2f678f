/**
 * Test servers: the socket on a real Node HTTP server, on an ephemeral port.
 */
import { Broker, ChannelBroadcaster, ChannelSocket } from "@effect-channels/core"
import type { ChannelHandler } from "@effect-channels/core/ChannelHandler"
import { NodeChannelServer, NodeWebSocketServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import { createServer } from "node:http"

export interface TestServer {
  readonly port: number
  /** `ws://127.0.0.1:<port>/socket` (append `/websocket`, or give it to the phoenix client); `http://` for "longpoll". */
  readonly socketUrl: string
  /** `http://127.0.0.1:<port>/socket` (append `/longpoll`). */
  readonly httpUrl: string
  readonly broadcaster: ChannelBroadcaster.Service
  readonly broker: Broker.Service
}

/**
 * How the socket is served: "server" is `NodeChannelServer` (the Node HTTP
 * server takes the upgrades), "route" is `ChannelSocket.router` with the `ws`
 * server of `NodeWebSocketServer`, "platform" is `ChannelSocket.router` with
 * the portable server of the core package.
 */
export type Transport = "server" | "route" | "platform" | "longpoll"

/** The WebSocket servings. */
export const transports: ReadonlyArray<Transport> = ["server", "route", "platform"]

/**
 * The WebSocket servings and long-poll (on `NodeChannelServer`, through the
 * same accept), for the suites of raw clients: with "longpoll", `socketUrl`
 * is the `http://` base, and `rawClient.connect` opens a long-poll session.
 */
export const rawTransports: ReadonlyArray<Transport> = [...transports, "longpoll"]

export interface StartOptions extends NodeChannelServer.Options {
  readonly transport?: Transport
  /**
   * The broadcaster and its broker (default `ChannelBroadcaster.layerLocal`):
   * say the local one with histories, `ChannelBroadcaster.layerLocal.pipe(Layer.provide(ChannelHistory.layer(...)))`.
   */
  readonly broadcaster?: Layer.Layer<ChannelBroadcaster.ChannelBroadcaster | Broker.Broker, unknown>
}

/** Serves `handler` at `/socket` for the life of the scope. */
export const startServer = (
  handler: Layer.Layer<ChannelHandler, never, Broker.Broker | ChannelBroadcaster.ChannelBroadcaster>,
  options: StartOptions = {}
): Effect.Effect<TestServer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { broadcaster = ChannelBroadcaster.layerLocal, transport = "server", ...options_ } = options
    // A secret, so that the servers do not warn of a generated one (`longPoll: {}` for the default).
    // Over long-poll, a client that goes away (stops polling) is found 1.5 windows later: a short window.
    const socketOptions: ChannelSocket.Options = options_.longPoll === undefined
      ? { ...options_, longPoll: { secret: "test-secret", ...(transport === "longpoll" ? { window: "200 millis" } : {}) } }
      : options_
    const channels = handler.pipe(Layer.provideMerge(broadcaster))
    const listen = { port: 0, host: "127.0.0.1" }
    const served = transport === "server" || transport === "longpoll"
      ? HttpServer.serve(HttpRouter.empty).pipe(
        Layer.provideMerge(NodeChannelServer.layer(createServer, listen, socketOptions))
      )
      : HttpServer.serve(ChannelSocket.router(socketOptions)).pipe(
        Layer.provideMerge(transport === "route" ? NodeWebSocketServer.layer : Layer.empty),
        Layer.provideMerge(NodeHttpServer.layer(createServer, listen))
      )
    const context = yield* Layer.build(Layer.provideMerge(served, channels)).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return {
      port: address.port,
      socketUrl: `${transport === "longpoll" ? "http" : "ws"}://127.0.0.1:${address.port}/socket`,
      httpUrl: `http://127.0.0.1:${address.port}/socket`,
      broadcaster: Context.get(context, ChannelBroadcaster.ChannelBroadcaster),
      broker: Context.get(context, Broker.Broker)
    }
  })
