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
import type { Frame } from "@effect-channels/core/protocol/Message"
import type { Listener, Transport } from "@effect-channels/core/transport/Transport"
import * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as NodeHttpServerRequest from "@effect/platform-node/NodeHttpServerRequest"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import * as WS from "ws"

const closeGrace = 2000
const noHead = Buffer.alloc(0)

const selectProtocol = (protocols: Set<string>) => (protocols.has("phoenix") ? "phoenix" : false)

const handleUpgrade = (server: WS.WebSocketServer, incoming: IncomingMessage) =>
  Effect.async<WS.WebSocket>((resume) => {
    // Clients wait for the 101 response before sending frames (RFC 6455
    // 4.1), so no bytes of the upgraded stream precede this call.
    server.handleUpgrade(incoming, incoming.socket, noHead, (ws) => resume(Effect.succeed(ws)))
  })

const awaitClose = (ws: WS.WebSocket) =>
  Effect.async<void>((resume) => {
    if (ws.readyState === WS.WebSocket.CLOSED) return resume(Effect.void)
    ws.once("close", () => resume(Effect.void))
  })

/**
 * Closes with 1001 when the connection's scope ends first (server shutdown),
 * then waits until the socket is gone, so that nothing else writes on it.
 */
const release = (ws: WS.WebSocket) =>
  Effect.suspend(() => {
    if (ws.readyState === WS.WebSocket.OPEN) ws.close(1001, "server shutting down")
    return awaitClose(ws).pipe(
      Effect.timeoutTo({
        duration: closeGrace,
        onSuccess: () => Effect.void,
        onTimeout: () => Effect.zipRight(Effect.sync(() => ws.terminate()), awaitClose(ws))
      }),
      Effect.flatten
    )
  })

const makeServer = (maxFrameSize: number) =>
  new WS.WebSocketServer({
    noServer: true,
    maxPayload: maxFrameSize,
    perMessageDeflate: false,
    handleProtocols: selectProtocol
  })

const closeServer = (server: WS.WebSocketServer) =>
  Effect.async<void>((resume) => server.close(() => resume(Effect.void)))

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
    const ws = yield* Effect.acquireRelease(handleUpgrade(server, incoming), release)
    // Listen at once: frames that arrive before `listen` wait for it.
    const pending: Array<Frame> = []
    let listener: Listener | undefined
    let closed = false
    ws.on("message", (data: WS.RawData, isBinary: boolean) => {
      const frame = isBinary ? data as Buffer : (data as Buffer).toString("utf8")
      if (listener === undefined) pending.push(frame)
      else listener.onFrame(frame)
    })
    ws.once("close", () => {
      closed = true
      listener?.onClose()
    })
    const transport: Transport = {
      send: (frame) => ws.send(frame),
      bufferedAmount: () => ws.bufferedAmount,
      close: (code, reason) => ws.close(code, reason)
    }
    return {
      transport,
      listen: (next: Listener) =>
        Effect.sync(() => {
          listener = next
          for (const frame of pending.splice(0)) next.onFrame(frame)
          if (closed) next.onClose()
        })
    }
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
  yield* Effect.addFinalizer(() => Effect.forEach(servers.values(), closeServer, { discard: true }))
  const serverFor = (maxFrameSize: number) => {
    let server = servers.get(maxFrameSize)
    if (server === undefined) {
      server = makeServer(maxFrameSize)
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
