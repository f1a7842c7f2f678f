/**
 * A Node HTTP server that serves a Phoenix socket next to an Effect `HttpApp`:
 * a drop-in for `NodeHttpServer.layer` that takes the socket's WebSocket
 * upgrades (`<path>/websocket`) off the HTTP server before the app sees them,
 * and serves its long-poll endpoint (`<path>/longpoll`, unless the
 * `longPoll` option is `false`) in front of the app, without a route.
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
 * @since 0.1.0
 */
import type { Broker } from "@effect-channels/core/Broker"
import type { ChannelBroadcaster } from "@effect-channels/core/ChannelBroadcaster"
import type { ChannelHandler } from "@effect-channels/core/ChannelHandler"
import * as ChannelSocket from "@effect-channels/core/ChannelSocket"
import * as LongPoll from "@effect-channels/core/LongPoll"
import type * as Etag from "@effect/platform/Etag"
import type * as HttpPlatform from "@effect/platform/HttpPlatform"
import * as HttpServer from "@effect/platform/HttpServer"
import type { ServeError } from "@effect/platform/HttpServerError"
import type * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import type { LazyArg } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
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
    }
    return emit(event, ...args)
  }
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
  options: ChannelSocket.Options = {}
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
    takeUpgrades(server, `${options.path ?? "/socket"}/websocket`, (request, socket, head) => handle(request, socket, head))
    return server
  }, listen)
  // Built after the HTTP server, so released before it: the connections are
  // closed (1001) and the long-poll sessions ended before the server waits
  // for its sockets to end. It provides the HTTP server the app is served
  // with: the app, with `<path>/longpoll` served in front of it.
  const socket = Layer.scoped(HttpServer.HttpServer, Effect.gen(function*() {
    const server = yield* HttpServer.HttpServer
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
        }))
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
    if (options.longPoll === false) return server
    const longPoll = yield* LongPoll.make(channelSocket, options.longPoll ?? {})
    return HttpServer.make({
      address: server.address,
      serve: (app, middleware) =>
        server.serve(LongPoll.mount(app, channelSocket.path, longPoll), middleware as never)
    })
  }))
  return Layer.provideMerge(socket, http)
}
