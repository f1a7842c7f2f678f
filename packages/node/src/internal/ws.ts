import type { UpgradedSocket } from "@effect-channels/core/WebSocket"
import type { Frame } from "@effect-channels/core/Message"
import type { Listener, Transport } from "@effect-channels/core/Transport"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import * as WS from "ws"

const closeGrace = 2000

const selectProtocol = (protocols: Set<string>) => (protocols.has("phoenix") ? "phoenix" : false)

/**
 * A `ws` socket that keeps what its transport needs: the connection
 * listening to it, the frames received before it listens, whether it has
 * closed. Its event handlers are shared functions, not closures per socket.
 */
class PhoenixSocket extends WS.WebSocket {
  listener: Listener | undefined = undefined
  pending: Array<Frame> | undefined = undefined
  ended = false
}

// `this` is the socket: `ws` makes every socket a `PhoenixSocket` (`makeServer`).
function onMessage(this: WS.WebSocket, data: WS.RawData, isBinary: boolean) {
  const ws = this as PhoenixSocket
  const frame = isBinary ? data as Buffer : (data as Buffer).toString("utf8")
  if (ws.listener === undefined) (ws.pending ??= []).push(frame)
  else ws.listener.onFrame(frame)
}

function onClose(this: WS.WebSocket) {
  const ws = this as PhoenixSocket
  ws.ended = true
  ws.listener?.onClose()
}

// `ws` reports protocol errors (an oversized or invalid frame) as errors,
// then closes the socket with the matching code: the close ends the connection.
function ignore() {}

class WsTransport implements Transport {
  constructor(readonly ws: PhoenixSocket, readonly socket: Duplex) {}
  send(frame: Frame) {
    this.ws.send(frame)
  }
  sendAll(frames: ReadonlyArray<Frame>) {
    // One write for the batch: `ws` frames each message, the corked socket
    // sends them together.
    this.socket.cork()
    for (const frame of frames) this.ws.send(frame)
    this.socket.uncork()
  }
  bufferedAmount() {
    return this.ws.bufferedAmount
  }
  close(code: number, reason: string) {
    this.ws.close(code, reason)
  }
  abort() {
    this.ws.terminate()
  }
}

/**
 * A `ws` server for Phoenix sockets: `maxPayload` is the frame size limit
 * (checked against the frame header, before the frame is buffered), no
 * compression, and the `phoenix` subprotocol selected when offered.
 *
 * @internal
 */
export const makeServer = (maxFrameSize: number): WS.WebSocketServer =>
  new WS.WebSocketServer({
    noServer: true,
    WebSocket: PhoenixSocket,
    maxPayload: maxFrameSize,
    perMessageDeflate: false,
    handleProtocols: selectProtocol
  })

/** @internal */
export const closeServer = (server: WS.WebSocketServer) =>
  Effect.async<void>((resume) => server.close(() => resume(Effect.void)))

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

const upgraded = (ws: PhoenixSocket, socket: Duplex): UpgradedSocket => ({
  transport: new WsTransport(ws, socket),
  listen: (listener) =>
    Effect.sync(() => {
      ws.listener = listener
      const pending = ws.pending
      ws.pending = undefined
      if (pending !== undefined) for (const frame of pending) listener.onFrame(frame)
      if (ws.ended) listener.onClose()
    })
})

const handshake = (server: WS.WebSocketServer, incoming: IncomingMessage, socket: Duplex, head: Buffer) =>
  Effect.async<PhoenixSocket>((resume) => {
    // The client may be gone already, or `ws` may refuse the handshake
    // (it answers and destroys the socket): the connection ends here.
    if (socket.destroyed) return resume(Effect.interrupt)
    const onGone = () => resume(Effect.interrupt)
    socket.once("close", onGone)
    server.handleUpgrade(incoming, socket, head, (ws) => {
      socket.off("close", onGone)
      // Listen at once: frames that arrive before `listen` wait for it.
      ws.on("message", onMessage)
      ws.once("close", onClose)
      ws.on("error", ignore)
      resume(Effect.succeed(ws as PhoenixSocket))
    })
  })

/**
 * Completes the WebSocket handshake of an upgrade request; the socket is
 * closed with the scope. A handshake `ws` rejects (a bad key or version) is
 * answered by `ws` itself; then, as when the client is gone, the effect is
 * interrupted.
 *
 * @internal
 */
export const upgrade = (
  server: WS.WebSocketServer,
  incoming: IncomingMessage,
  socket: Duplex,
  head: Buffer
): Effect.Effect<UpgradedSocket, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) => upgradeIn(scope, server, incoming, socket, head))

/**
 * {@link upgrade}, with the scope given rather than read from the context.
 *
 * @internal
 */
export const upgradeIn = (
  scope: Scope.Scope,
  server: WS.WebSocketServer,
  incoming: IncomingMessage,
  socket: Duplex,
  head: Buffer
): Effect.Effect<UpgradedSocket> =>
  Effect.uninterruptible(Effect.flatMap(handshake(server, incoming, socket, head), (ws) => releasedWithScope(scope, ws, socket)))

/**
 * The socket, released as the scope closes: a finalizer of the scope itself
 * (`acquireRelease` keeps a copy of the fiber's refs per resource), made
 * apart from the request, which it does not keep.
 */
const releasedWithScope = (scope: Scope.Scope, ws: PhoenixSocket, socket: Duplex) =>
  Effect.as(Scope.addFinalizerExit(scope, () => release(ws)), upgraded(ws, socket))
