import type { UpgradedSocket } from "@effect-channels/core/transport/WebSocket"
import type { Frame } from "@effect-channels/core/protocol/Message"
import type { Listener, Transport } from "@effect-channels/core/transport/Transport"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import * as WS from "ws"

const closeGrace = 2000

const selectProtocol = (protocols: Set<string>) => (protocols.has("phoenix") ? "phoenix" : false)

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
  Effect.gen(function*() {
    const ws = yield* Effect.acquireRelease(
      Effect.async<WS.WebSocket>((resume) => {
        // The client may be gone already, or `ws` may refuse the handshake
        // (it answers and destroys the socket): the connection ends here.
        if (socket.destroyed) return resume(Effect.interrupt)
        const onClose = () => resume(Effect.interrupt)
        socket.once("close", onClose)
        server.handleUpgrade(incoming, socket, head, (ws) => {
          socket.off("close", onClose)
          resume(Effect.succeed(ws))
        })
      }),
      release
    )
    // `ws` reports protocol errors (an oversized or invalid frame) here, then
    // closes the socket with the matching code: the close ends the connection.
    ws.on("error", () => {})
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
      sendAll: (frames) => {
        // One write for the batch: `ws` frames each message, the corked
        // socket sends them together.
        socket.cork()
        for (const frame of frames) ws.send(frame)
        socket.uncork()
      },
      bufferedAmount: () => ws.bufferedAmount,
      close: (code, reason) => ws.close(code, reason),
      abort: () => ws.terminate()
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
