/**
 * A `WebSocketServer` for Node on `ws`, tuned for Phoenix sockets:
 *
 * - the frame size limit is `ws`'s `maxPayload`, checked against the frame
 *   header, so an oversized frame is refused (close code 1009) before it is
 *   buffered;
 * - per-message compression is off (as in Phoenix's default);
 * - the `phoenix` subprotocol is selected when a client offers it (clients
 *   that send an auth token offer it, and browsers drop a connection whose
 *   answer selects none of the offered subprotocols).
 *
 * ```ts
 * app.pipe(Layer.provide(NodeWebSocketServer.layer))
 * ```
 *
 * It takes the upgrade from `@effect/platform-node`'s HTTP server, so it
 * serves the routes of an ordinary `HttpRouter`.
 *
 * @since 0.1.0
 */
import { WebSocket as ChannelsWebSocket } from "@effect-channels/core"
import * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type * as WS from "ws"
import * as Ws from "./internal/ws.js"

// Clients wait for the 101 response before sending frames (RFC 6455 4.1),
// so no bytes of the upgraded stream follow the request yet.
const noHead = Buffer.alloc(0)

const upgrade = (server: WS.WebSocketServer, request: HttpServerRequest.HttpServerRequest) =>
  Effect.gen(function*() {
    const incoming = NodeHttpServerRequest.toIncomingMessage(request)
    if (incoming.headers.upgrade?.toLowerCase() !== "websocket") {
      return yield* new HttpServerError.RequestError({
        request,
        reason: "Decode",
        description: "not a WebSocket upgrade request"
      })
    }
    return yield* Ws.upgrade(server, incoming, incoming.socket, noHead)
  })

/**
 * A `WebSocketServer` on `ws`. It keeps one `ws` server per frame size limit
 * (a socket mounted with `maxFrameSize` gets a server whose `maxPayload` is
 * that limit), closed with the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<ChannelsWebSocket.Service, never, Scope.Scope> = Effect.gen(function*() {
  const servers = new Map<number, WS.WebSocketServer>()
  yield* Effect.addFinalizer(() => Effect.forEach(servers.values(), Ws.closeServer, { discard: true }))
  const serverFor = (maxFrameSize: number) => {
    let server = servers.get(maxFrameSize)
    if (server === undefined) {
      server = Ws.makeServer(maxFrameSize)
      servers.set(maxFrameSize, server)
    }
    return server
  }
  return {
    upgrade: (request, options) => upgrade(serverFor(options.maxFrameSize), request)
  }
})

/**
 * Provides the `ws`-based `WebSocketServer`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ChannelsWebSocket.WebSocketServer> = Layer.scoped(
  ChannelsWebSocket.WebSocketServer,
  make
)
