/**
 * A Node HTTP server that serves Phoenix sockets next to an Effect `HttpApp`:
 * a drop-in for `NodeHttpServer.layer` that takes the sockets' WebSocket
 * upgrades (`<path>/websocket`) off the HTTP server before the app sees them,
 * and serves their long-poll endpoints (`<path>/longpoll`, unless a socket's
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
 * One socket, served with the `ChannelHandler` in context, takes the
 * socket's options (`ChannelSocket.Options`). Several, each with its own
 * handler layer and options, as Phoenix's endpoint mounts several sockets,
 * are given as `sockets`:
 *
 * ```ts
 * NodeChannelServer.layer(createServer, { port: 4000 }, {
 *   sockets: [
 *     ChannelSocket.mount(UserChannels, { path: "/socket" }),
 *     ChannelSocket.mount(AdminChannels, { path: "/admin", logLevel: false })
 *   ]
 * })
 * ```
 *
 * Why: served through `HttpRouter` (`ChannelSocket.router`), each connection
 * lives in its HTTP request's fiber, which holds the whole request pipeline
 * (router, middleware, tracing span) for as long as the socket is open. Here
 * each connection is a fiber of its own, forked into a `FiberSet` of this
 * layer, with its own `Scope`: the same runtime and guarantees, a third of
 * the memory per connection.
 *
 * When the layer is released (on `SIGTERM` under `NodeRuntime.runMain`),
 * new upgrades are refused (503) and the open connections are drained as
 * Phoenix's drainer does: closed (1001) in batches of `drain.batchSize`
 * every `drain.batchInterval`, so that a deploy does not make every client
 * reconnect to the other nodes at the same instant, all within
 * `drain.shutdown`, after which those left are closed at once. Every
 * connection's `leave` and `disconnect` run.
 *
 * Everything else (admission by `vsn`, origin and `connect`, the frame size
 * limit checked before a frame is buffered, the `phoenix` subprotocol) is as
 * with `ChannelSocket.router` and `NodeWebSocketServer`.
 *
 * Slow handshakes: a TCP connection that has not completed its request
 * within `handshakeTimeout` (10 s), from its accept to the request's headers
 * for an HTTP route, or to the `101` (admission included) for the socket, is
 * answered 408 and closed. Node's own header timeout, 60 s checked every
 * 30 s, would hold a stalled connection up to 90 s. On shutdown, the
 * connections that have not completed their request (browsers open some
 * ahead of need) are closed at once: Node's `close` would wait for them.
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
import type * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberSet from "effect/FiberSet"
import type { LazyArg } from "effect/Function"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as RuntimeFlags from "effect/RuntimeFlags"
import * as Scope from "effect/Scope"
import * as Http from "node:http"
import type * as Net from "node:net"
import type { Duplex } from "node:stream"
import type * as WS from "ws"
import { Handshakes } from "./internal/handshakes.js"
import * as Ws from "./internal/ws.js"

type UpgradeHandler = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) => void

/** Answers a refused upgrade on the raw socket: its status and body, and the connection is not reused. */
const refuse = (socket: Duplex, status: number, body = "") => {
  if (!socket.writable) return socket.destroy()
  const content = body === ""
    ? "Content-Length: 0\r\n"
    : `Content-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n`
  socket.end(`HTTP/1.1 ${status} ${Http.STATUS_CODES[status] ?? ""}\r\nConnection: close\r\n${content}\r\n${body}`)
}

const unavailable: UpgradeHandler = (_request, socket) => refuse(socket, 503)

/**
 * Routes the upgrade requests of the paths of `handlers` to their handler;
 * every other event, other upgrades included, goes to the HTTP server's
 * listeners as before.
 */
const takeUpgrades = (
  server: Http.Server,
  handlers: ReadonlyMap<string, { handle: UpgradeHandler }>,
  handshakes: Handshakes
) => {
  const target = server as unknown as { emit: (event: string | symbol, ...args: Array<unknown>) => boolean }
  const emit = target.emit.bind(server)
  target.emit = (event, ...args) => {
    if (event === "upgrade") {
      const request = args[0] as Http.IncomingMessage
      const handler = handlers.get(new URL(request.url ?? "/", "http://localhost").pathname)
      if (handler !== undefined) {
        handshakes.upgrading(args[1] as Duplex)
        handler.handle(request, args[1] as Duplex, args[2] as Buffer)
        return true
      }
      handshakes.done(args[1] as Duplex)
    }
    return emit(event, ...args)
  }
}


/** Closes `scope` with the cause, then fails with it. */
const closeFailing = (scope: Scope.CloseableScope) => (cause: Cause.Cause<never>) =>
  Effect.zipRight(Scope.close(scope, Exit.failCause(cause)), Effect.failCause(cause))

/**
 * Runs `effect` interruptibly, then closes `scope` with its exit, however it
 * ends: what `Effect.onExit` does, in a connection's fiber, which is not
 * interruptible itself (see `serveSocket`), with two frames under the
 * connection's loop instead of three, and without keeping `effect` itself.
 */
const closingScope = <R>(scope: Scope.CloseableScope, effect: Effect.Effect<void, never, R>): Effect.Effect<void, never, R> =>
  Effect.matchCauseEffect(Effect.interruptible(effect), {
    onFailure: closeFailing(scope),
    onSuccess: () => Scope.close(scope, Exit.void)
  })

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
    // Admission reads what it needs; the socket's `connectInfo` option says
    // which of them the connection keeps.
    headers: request.headers as Readonly<Record<string, string | undefined>>,
    remoteAddress: Option.fromNullable(request.socket.remoteAddress),
    remotePort: request.socket.remotePort,
    scheme: (request.socket as { readonly encrypted?: boolean }).encrypted === true ? "https" : "http"
  })

/**
 * How the open connections are closed when the server shuts down, as
 * Phoenix's drainer: in batches of `batchSize` (default 10,000), one every
 * `batchInterval` (default 2 seconds), all within `shutdown` (default 30
 * seconds; those still open then are closed at once).
 *
 * @since 0.1.0
 * @category models
 */
export interface DrainOptions {
  readonly batchSize?: number | undefined
  readonly batchInterval?: Duration.DurationInput | undefined
  readonly shutdown?: Duration.DurationInput | undefined
}

/**
 * The server's own options.
 *
 * @since 0.1.0
 * @category models
 */
export interface ServerOptions {
  /** How connections are closed on shutdown; `false` closes them all at once. */
  readonly drain?: DrainOptions | false | undefined
  /**
   * How long a TCP connection may take to complete its request: its headers
   * for an HTTP route, its upgrade (to the `101`, admission included) for a
   * socket. Past it the connection is answered 408 and closed. Default 10 seconds.
   */
  readonly handshakeTimeout?: Duration.DurationInput | undefined
}

/**
 * One socket, served with the `ChannelHandler` in context.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options extends ChannelSocket.Options, ServerOptions {
  readonly sockets?: undefined
}

/**
 * Several sockets, each with its own handler and options.
 *
 * @since 0.1.0
 * @category models
 */
export interface SocketsOptions<M extends ReadonlyArray<ChannelSocket.Mount<unknown, unknown>>> extends ServerOptions {
  readonly sockets: M
}

/** What the layer provides: `NodeHttpServer.layer`'s services. */
type Provided = HttpPlatform.HttpPlatform | Etag.Generator | NodeContext.NodeContext | HttpServer.HttpServer

/**
 * Closes the connections of `fibers` in batches, then waits for them to end,
 * all within the deadline; those left are interrupted by the `FiberSet`.
 */
const drain = (fibers: FiberSet.FiberSet<void>, options: DrainOptions) => {
  const batchSize = options.batchSize ?? 10_000
  const interval = Duration.decode(options.batchInterval ?? "2 seconds")
  const batches = Effect.gen(function*() {
    const open = Array.from(fibers)
    if (open.length === 0) return
    // Phoenix's drainer says the same.
    yield* Effect.logInfo(
      `Shutting down ${open.length} sockets in ${Math.ceil(open.length / batchSize)} rounds of ${
        Duration.toMillis(interval)
      }ms`
    )
    for (let start = 0; start < open.length; start += batchSize) {
      if (start > 0) yield* Effect.sleep(interval)
      yield* Effect.forEach(open.slice(start, start + batchSize), Fiber.interruptFork, { discard: true })
    }
    yield* FiberSet.awaitEmpty(fibers)
  })
  // Finalizers run uninterruptibly: the batches are made interruptible so
  // that the deadline can stop them.
  return Effect.asVoid(Effect.timeoutOption(Effect.interruptible(batches), options.shutdown ?? "30 seconds"))
}

/**
 * Serves `channelSocket` on upgrades with the `ws` server `wss`: admits,
 * upgrades and opens each connection in a fiber of its own; nothing of the
 * request is kept once it is open.
 */
const serveSocket = (
  channelSocket: ChannelSocket.ChannelSocket,
  wss: WS.WebSocketServer,
  handshakes: Handshakes,
  run: (effect: Effect.Effect<void>) => Fiber.RuntimeFiber<void>
): UpgradeHandler => {
  const open = (
    scope: Scope.Scope,
    request: Http.IncomingMessage,
    socket: Duplex,
    head: Buffer
  ): Effect.Effect<ChannelSocket.Accepted | undefined> => {
    let upgrading = false
    const upgrade = (scope: Scope.Scope) =>
      Effect.suspend(() => {
        upgrading = true
        return Ws.upgradeIn(scope, wss, request, socket, head)
      })
    return connectRequest(request).pipe(
      Effect.flatMap((connect) => channelSocket.accept(connect, upgrade, scope)),
      Effect.catchTag("Refused", (refused) =>
        Effect.sync(() => {
          refuse(socket, refused.status, refused.body)
          return undefined
        })),
      // Interrupted during admission: refused as the upgrades that come now
      // are, when the server shuts down; already answered 408 when the
      // upgrade ran out of time.
      Effect.onInterrupt(() => Effect.sync(() => upgrading || !socket.writable || refuse(socket, 503))),
      Effect.ensuring(Effect.sync(() => handshakes.done(socket)))
    )
  }
  // The fiber is not interruptible: only admission and the connection's loop
  // are, and the scope is closed however they end.
  const connect = (request: Http.IncomingMessage, socket: Duplex, head: Buffer) =>
    Effect.flatMap(Scope.make(), (scope) =>
      Effect.matchCauseEffect(Effect.interruptible(open(scope, request, socket, head)), {
        onFailure: closeFailing(scope),
        onSuccess: serveIn(scope)
      }))
  return (request, socket, head) => {
    handshakes.admitting(socket, run(connect(request, socket, head)))
  }
}

/**
 * A Node HTTP server on `listen` serving one socket with the
 * `ChannelHandler` in context (`options` are the socket's and the
 * server's), or the several sockets of `options.sockets`.
 *
 * @since 0.1.0
 * @category layers
 */
export function layer(
  evaluate: LazyArg<Http.Server>,
  listen: Net.ListenOptions,
  options?: Options
): Layer.Layer<Provided, ServeError, ChannelHandler | Broker | ChannelBroadcaster>
export function layer<const M extends ReadonlyArray<ChannelSocket.Mount<unknown, unknown>>>(
  evaluate: LazyArg<Http.Server>,
  listen: Net.ListenOptions,
  options: SocketsOptions<M>
): Layer.Layer<
  Provided,
  ServeError | ChannelSocket.Mount.Error<M[number]>,
  ChannelSocket.Mount.Context<M[number]> | Broker | ChannelBroadcaster
>
export function layer(
  evaluate: LazyArg<Http.Server>,
  listen: Net.ListenOptions,
  options: Options | SocketsOptions<ReadonlyArray<ChannelSocket.Mount<unknown, unknown>>> = {}
): Layer.Layer<Provided, unknown, unknown> {
  const sockets = options.sockets
  const paths = sockets === undefined
    ? [(options as Options).path ?? "/socket"]
    : sockets.map((mounted) => mounted.options.path ?? "/socket")
  const duplicate = paths.find((path, index) => paths.indexOf(path) !== index)
  if (duplicate !== undefined) return Layer.die(new Error(`NodeChannelServer: two sockets at ${duplicate}`))
  const batchSize = options.drain === false ? undefined : options.drain?.batchSize
  if (batchSize !== undefined && !(Number.isInteger(batchSize) && batchSize > 0)) {
    return Layer.die(new Error(`NodeChannelServer: drain.batchSize must be a positive integer, not ${batchSize}`))
  }
  // Upgrades are taken from the moment the server exists; until the sockets'
  // layer is up (a few milliseconds at start), they are refused with 503.
  const handlers = new Map(paths.map((path) => [`${path}/websocket`, { handle: unavailable }]))
  const handshakes = new Handshakes(Duration.toMillis(Duration.decode(options.handshakeTimeout ?? "10 seconds")))
  const http = NodeHttpServer.layer(() => {
    const server = evaluate()
    handshakes.watch(server)
    takeUpgrades(server, handlers, handshakes)
    return server
  }, listen)
  // Built after the HTTP server, so released before it: the connections are
  // drained and closed (1001), and the long-poll sessions ended, before the
  // server waits for its sockets to end. It provides the HTTP server the app
  // is served with: the app, with each `<path>/longpoll` served in front of it.
  const served = Layer.scoped(HttpServer.HttpServer, Effect.gen(function*() {
    const server = yield* HttpServer.HttpServer
    const socketOptions: ReadonlyArray<ChannelSocket.Options> = sockets === undefined
      ? [options as Options]
      : sockets.map((mounted) => mounted.options)
    const channelSockets = sockets === undefined
      ? [yield* ChannelSocket.make(options as Options)]
      : yield* Effect.forEach(sockets, ChannelSocket.makeMounted)
    // Made before the connections' fibers, so closed after them: closing a
    // `ws` server waits for its connections to end.
    const servers = yield* Effect.forEach(channelSockets, (channelSocket) =>
      Effect.acquireRelease(Effect.sync(() => Ws.makeServer(channelSocket.maxFrameSize)), Ws.closeServer))
    const fibers = yield* FiberSet.make<void>()
    // Each connection's fiber starts not interruptible (`serveSocket` says
    // which of its parts are): one frame fewer under every hook it runs,
    // which keeps its stack's array, never shrunk, at its first size.
    const runFork = Runtime.runFork(Runtime.disableRuntimeFlag(yield* Effect.runtime<never>(), RuntimeFlags.Interruption))
    const run = (effect: Effect.Effect<void>) => {
      const fiber = runFork(effect)
      FiberSet.unsafeAdd(fibers, fiber)
      return fiber
    }
    const handles = channelSockets.map((channelSocket, index) =>
      serveSocket(channelSocket, servers[index]!, handshakes, run)
    )
    if (options.drain !== false) {
      const drainOptions = options.drain ?? {}
      yield* Effect.addFinalizer(() => drain(fibers, drainOptions))
    }
    channelSockets.forEach((channelSocket, index) => {
      handlers.get(`${channelSocket.path}/websocket`)!.handle = handles[index]!
    })
    // First on shutdown: upgrades are refused, and the connections that have
    // not sent (all of) their request are closed, before the drain.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        for (const handler of handlers.values()) handler.handle = unavailable
        handshakes.closeWaiting()
      })
    )
    const longPolls: Array<readonly [`/${string}`, LongPoll.LongPollServer]> = []
    for (const [index, channelSocket] of channelSockets.entries()) {
      const longPoll = socketOptions[index]!.longPoll
      if (longPoll !== false) longPolls.push([channelSocket.path, yield* LongPoll.make(channelSocket, longPoll ?? {})])
    }
    if (longPolls.length === 0) return server
    return HttpServer.make({
      address: server.address,
      serve: (app, middleware) =>
        server.serve(
          longPolls.reduce((served, [path, longPoll]) => LongPoll.mount(served, path, longPoll), app),
          middleware as never
        )
    })
  }))
  return Layer.provideMerge(served, http)
}
