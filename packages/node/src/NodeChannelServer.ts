/**
 * A Node HTTP server that serves a Phoenix socket next to an Effect `HttpApp`:
 * a drop-in for `NodeHttpServer.layer` that takes the socket's WebSocket
 * upgrades (`<path>/websocket`) off the HTTP server before the app sees them.
 *
 * ```ts
 * HttpServer.serve(appRouter).pipe(
 *   Layer.provide(NodeChannelServer.layer(createServer, { port: 4000 }, { path: "/socket" })),
 *   Layer.provide(ChatChannel.layer),
 *   Layer.provide(ChannelBroadcaster.layerLocal),
 *   Layer.launch,
 *   NodeRuntime.runMain
 * )
 * ```
 *
 * Why: served through `HttpRouter` (`ChannelSocket.router`), each connection
 * lives in its HTTP request's fiber, which holds the whole request pipeline
 * (router, middleware, tracing span) for as long as the socket is open. Here
 * each connection is a fiber of its own, forked into a `FiberSet` of this
 * layer, with its own `Scope`: the same runtime and guarantees, a third of
 * the memory per connection. The server closes every connection (1001) when
 * the layer is released, as on `SIGTERM` under `NodeRuntime.runMain`.
 *
 * Everything else (admission by `vsn`, origin and `connect`, the frame size
 * limit checked before a frame is buffered, the `phoenix` subprotocol) is as
 * with `ChannelSocket.router` and `NodeWebSocketServer`.
 *
 * Slow handshakes: a TCP connection that has not completed its request
 * within `handshakeTimeout` (10 s), from its accept to the request's headers
 * for an HTTP route, or to the `101` (admission included) for the socket, is
 * answered 408 and closed. Node's own header timeout, 60 s checked every
 * 30 s, would hold a stalled connection up to 90 s.
 *
 * @since 0.1.0
 */
import type { Broker } from "@effect-channels/core/Broker"
import type { ChannelBroadcaster } from "@effect-channels/core/ChannelBroadcaster"
import type { ChannelHandler } from "@effect-channels/core/ChannelHandler"
import * as ChannelSocket from "@effect-channels/core/ChannelSocket"
import type * as Etag from "@effect/platform/Etag"
import type * as HttpPlatform from "@effect/platform/HttpPlatform"
import * as HttpServer from "@effect/platform/HttpServer"
import type { ServeError } from "@effect/platform/HttpServerError"
import type * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Duration from "effect/Duration"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type { LazyArg } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
import * as Tls from "node:tls"
import type { Duplex } from "node:stream"
import * as Ws from "./internal/ws.js"

type UpgradeHandler = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void

const refuse = (socket: Duplex, status: number) => {
  socket.end(`HTTP/1.1 ${status} ${Http.STATUS_CODES[status] ?? ""}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
}

/**
 * Routes the upgrade requests of `path` to `handle`; every other event,
 * other upgrades included, goes to the HTTP server's listeners as before.
 */
const takeUpgrades = (server: Http.Server, path: string, handle: UpgradeHandler) => {
  const target = server as unknown as { emit: (event: string | symbol, ...args: Array<unknown>) => boolean }
  const emit = target.emit.bind(server)
  target.emit = (event, ...args) => {
    if (event === "upgrade") {
      const request = args[0] as Http.IncomingMessage
      if (new URL(request.url ?? "/", "http://localhost").pathname === path) {
        handle(request, args[1] as Duplex, args[2] as Buffer)
        return true
      }
      handshakeDone(args[1] as Duplex)
    }
    return emit(event, ...args)
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options extends ChannelSocket.Options {
  /**
   * How long a TCP connection may take to complete its request: its headers
   * for an HTTP route, its upgrade (to the `101`, admission included) for the
   * socket. Past it the connection is answered 408 and closed. Default 10 seconds.
   */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
}

const handshakeTimer = Symbol("handshakeTimer")

interface Handshaking {
  [handshakeTimer]?: ReturnType<typeof setTimeout> | undefined
}

const requestTimeout = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

const ignore = () => {}

const expireHandshake = (socket: Duplex) => {
  ;(socket as Handshaking)[handshakeTimer] = undefined
  if (!socket.writable) return socket.destroy()
  // An upgrade's socket has no error listener of Node's any more: a reset while it closes is no crash.
  socket.on("error", ignore)
  socket.end(requestTimeout, () => socket.destroy())
}

/** The connection's request is complete: from now on, Node's timeouts (HTTP) or the socket's (WebSocket) apply. */
const handshakeDone = (socket: Duplex) => {
  const timer = (socket as Handshaking)[handshakeTimer]
  if (timer !== undefined) {
    clearTimeout(timer)
    ;(socket as Handshaking)[handshakeTimer] = undefined
  }
}

/**
 * Gives every connection `millis` to complete its request: one timer per
 * connection while it handshakes, none after.
 */
const limitHandshakes = (server: Http.Server, millis: number) => {
  // On TLS, the request's socket is the TLS one.
  server.on(server instanceof Tls.Server ? "secureConnection" : "connection", (socket: Duplex) => {
    const timer = setTimeout(expireHandshake, millis, socket)
    timer.unref()
    ;(socket as Handshaking)[handshakeTimer] = timer
  })
  server.prependListener("request", (request: Http.IncomingMessage) => handshakeDone(request.socket))
}

/**
 * Runs `effect`, then closes `scope` with its exit, however it ends: what
 * `Effect.onExit` does, with fewer frames on the stack of a parked
 * connection, and without keeping `effect` itself.
 */
const closingScope = <R>(scope: Scope.CloseableScope, effect: Effect.Effect<void, never, R>): Effect.Effect<void, never, R> =>
  Effect.uninterruptible(Effect.matchCauseEffect(Effect.interruptible(effect), {
    onFailure: (cause) => Effect.zipRight(Scope.close(scope, Exit.failCause(cause)), Effect.failCause(cause)),
    onSuccess: () => Scope.close(scope, Exit.void)
  }))

/**
 * Serves an accepted connection until it ends, then closes its scope. Made
 * here, apart from the request, so that an open connection's fiber does not
 * hold the request; and only the connection's loop is in `closingScope`, so
 * that the fiber does not hold the effects that opened it either.
 */
const serveIn = (scope: Scope.CloseableScope) => (accepted: ChannelSocket.Accepted | undefined): Effect.Effect<void> =>
  accepted === undefined ? Scope.close(scope, Exit.void) : closingScope(scope, accepted.run)

const connectRequest = (request: Http.IncomingMessage) =>
  ChannelSocket.websocketRequest({
    method: request.method ?? "GET",
    url: request.url ?? "/",
    headers: { ...request.headers } as Readonly<Record<string, string | undefined>>,
    remoteAddress: Option.fromNullable(request.socket.remoteAddress)
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  evaluate: LazyArg<Http.Server>,
  listen: Net.ListenOptions,
  options: Options = {}
): Layer.Layer<
  HttpPlatform.HttpPlatform | Etag.Generator | NodeContext.NodeContext | HttpServer.HttpServer,
  ServeError,
  ChannelHandler | Broker | ChannelBroadcaster
> => {
  // Upgrades are taken from the moment the server exists; until the socket's
  // layer is up (a few milliseconds at start), they are refused with 503.
  let handle: UpgradeHandler = (_request, socket) => refuse(socket, 503)
  const http = NodeHttpServer.layer(() => {
    const server = evaluate()
    limitHandshakes(server, Duration.toMillis(Duration.decode(options.handshakeTimeout ?? "10 seconds")))
    takeUpgrades(server, `${options.path ?? "/socket"}/websocket`, (request, socket, head) => handle(request, socket, head))
    return server
  }, listen)
  // Built after the HTTP server, so released before it: the connections are
  // closed (1001) before the server waits for its sockets to end.
  const socket = Layer.scopedDiscard(Effect.gen(function*() {
    yield* HttpServer.HttpServer
    const channelSocket = yield* ChannelSocket.make(options)
    const wss = yield* Effect.acquireRelease(Effect.sync(() => Ws.makeServer(channelSocket.maxFrameSize)), Ws.closeServer)
    const run = yield* FiberSet.makeRuntime<never>()
    /** Admits, upgrades and opens the connection; nothing of the request is kept once it is open. */
    const open = (
      scope: Scope.Scope,
      request: Http.IncomingMessage,
      socket: Duplex,
      head: Buffer
    ): Effect.Effect<ChannelSocket.Accepted | undefined> =>
      connectRequest(request).pipe(
        Effect.flatMap((connect) => channelSocket.accept(connect, (scope) => Ws.upgradeIn(scope, wss, request, socket, head), scope)),
        Effect.catchTag("Refused", (refused) => Effect.sync(() => {
          refuse(socket, refused.status)
          return undefined
        })),
        Effect.ensuring(Effect.sync(() => handshakeDone(socket)))
      )
    const connect = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) =>
      Effect.flatMap(Scope.make(), (scope) =>
        Effect.flatMap(
          Effect.onError(open(scope, request, socket, head), (cause) => Scope.close(scope, Exit.failCause(cause))),
          serveIn(scope)
        ))
    handle = (request, socket, head) => {
      run(connect(request, socket, head))
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        handle = (_request, socket) => refuse(socket, 503)
      })
    )
  }))
  return Layer.provideMerge(socket, http)
}
