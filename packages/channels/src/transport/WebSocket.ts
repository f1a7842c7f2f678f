/**
 * The WebSocket transport. `WebSocketServer` turns an HTTP upgrade request
 * into a {@link Transport} and a loop that feeds received frames to the
 * connection until the socket closes.
 *
 * Without a `WebSocketServer` in context, the portable one over
 * `@effect/platform`'s `HttpServerRequest.upgrade` is used: it runs wherever
 * the platform does, but the platform buffers a whole frame before the frame
 * size limit is checked. `@effect-channels/node` provides one on `ws` that
 * refuses an oversized frame from its header.
 *
 * @since 0.1.0
 */
import type * as HttpServerError from "@effect/platform/HttpServerError"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as Socket from "@effect/platform/Socket"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { Opened, Transport } from "./Transport.js"

/**
 * An upgraded WebSocket.
 *
 * @since 0.1.0
 * @category models
 */
export type UpgradedSocket = Opened

/**
 * @since 0.1.0
 * @category models
 */
export interface UpgradeOptions {
  /** The largest frame accepted, in bytes; a larger one closes the socket with 1009. */
  readonly maxFrameSize: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly upgrade: (
    request: HttpServerRequest.HttpServerRequest,
    options: UpgradeOptions
  ) => Effect.Effect<UpgradedSocket, HttpServerError.RequestError, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class WebSocketServer extends Context.Tag("@effect-channels/WebSocketServer")<WebSocketServer, Service>() {}

/**
 * The portable server, over `HttpServerRequest.upgrade`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const platform: Service = {
  upgrade: (request) =>
    Effect.gen(function*() {
      const socket = yield* request.upgrade
      const write = yield* socket.writer
      // The platform hands the raw socket to message handlers only; it is
      // captured with the first frame. Until then (the server has nothing to
      // send before the client's first message) writes go through the writer.
      let ws: globalThis.WebSocket | undefined
      const capture = Effect.map(Effect.serviceOption(Socket.WebSocket), (raw) => {
        ws = Option.getOrUndefined(raw)
      })
      const transport: Transport = {
        send: (frame) => ws !== undefined ? ws.send(frame) : Effect.runFork(write(frame)),
        sendAll: (frames) => {
          for (const frame of frames) transport.send(frame)
        },
        bufferedAmount: () => ws?.bufferedAmount ?? 0,
        close: (code, reason) =>
          ws !== undefined ? ws.close(code, reason) : Effect.runFork(write(new Socket.CloseEvent(code, reason))),
        // A WebSocket has no way to drop a connection at once but Node's `ws`;
        // elsewhere the close frame is sent.
        abort: () => {
          const raw = ws as (globalThis.WebSocket & { terminate?: () => void }) | undefined
          if (raw?.terminate !== undefined) raw.terminate()
          else transport.close(1013, "outbound buffer full")
        }
      }
      return {
        transport,
        listen: (listener) =>
          socket.runRaw((frame) => {
            listener.onFrame(frame)
            return ws === undefined ? capture : undefined
          }).pipe(
            Effect.catchAll((error) => Effect.annotateLogs(Effect.logDebug("socket closed"), "error", String(error))),
            Effect.ensuring(Effect.sync(() => listener.onClose())),
            Effect.forkScoped,
            Effect.asVoid
          )
      }
    })
}
