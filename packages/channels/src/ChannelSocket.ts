/**
 * Serves a Phoenix socket over HTTP: `ChannelSocket.router()` is an
 * `HttpRouter` with the WebSocket endpoint at `/socket/websocket` and the
 * long-poll one at `/socket/longpoll` (see `LongPoll`), ready to be
 * concatenated with an application's routes.
 *
 * ```ts
 * const App = HttpRouter.empty.pipe(
 *   HttpRouter.get("/", HttpServerResponse.text("hello")),
 *   HttpRouter.concat(ChannelSocket.router({ path: "/socket" }))
 * )
 *
 * App.pipe(
 *   HttpServer.serve(),
 *   Layer.provide(Channels),                      // your ChannelHandler layer
 *   Layer.provide(ChannelBroadcaster.layerLocal), // broker and broadcaster
 *   Layer.provide(NodeHttpServer.layer(createServer, { port: 4000 })),
 *   Layer.launch,
 *   NodeRuntime.runMain
 * )
 * ```
 *
 * Before a socket is opened the request is checked as Phoenix does: the `vsn`
 * query parameter picks the serializer (anything but `1.x`, `2.x` or none is
 * refused with 403), the `Origin` header must be allowed (403), then the
 * handler's `connect` runs with the other query parameters as connect
 * parameters, the URI, the peer, the auth token the client offered and the
 * headers the socket's `connectInfo` option keeps (none by default).
 *
 * A refusal by `connect` is answered with the status and body of its
 * `ConnectRefused` (403 and empty by default). Each connect is logged as
 * Phoenix logs it (`CONNECTED TO /socket in 65µs`, then the transport, the
 * serializer and the parameters with the `filterParameters` filtered), at
 * the socket's `logLevel`.
 *
 * Several sockets, each with its own handler and options, are
 * {@link mount}s: served by `NodeChannelServer.layer(..., { sockets })`, or
 * as routes by {@link routerOf}.
 *
 * Every transport goes through one function, {@link accept}: a transport's
 * server (the WebSocket servers here and in `@effect-channels/node`, the
 * long-poll one, `ChannelTest`'s in-memory one) turns its request into a
 * {@link ConnectRequest}, and `accept` admits it, opens the transport and
 * serves the connection on it under the socket's rules.
 *
 * @since 0.1.0
 */
import * as Headers from "@effect/platform/Headers"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { Broker } from "./Broker.js"
import { ChannelBroadcaster } from "./ChannelBroadcaster.js"
import type { ConnectInfo } from "./ChannelConn.js"
import { ChannelHandler } from "./ChannelHandler.js"
import { telemetry } from "./internal/metrics.js"
import * as internal from "./internal/socket.js"
import * as LongPoll from "./transport/LongPoll.js"
import type { Opened } from "./transport/Transport.js"
import * as WebSocket from "./transport/WebSocket.js"

/**
 * Decides whether a browser's `Origin` may connect.
 *
 * - `true` (the default): the origin's host must be the request's `Host`.
 * - `false`: every origin is allowed.
 * - a list: origins like `"https://example.com"`, `"//example.com"` (any
 *   scheme) or `"//*.example.com"` (any subdomain); a port must match when given.
 * - a function of the origin and the request.
 *
 * Requests without an `Origin` header (non-browser clients) always pass.
 *
 * @since 0.1.0
 * @category models
 */
export type CheckOrigin =
  | boolean
  | ReadonlyArray<string>
  | ((origin: string, request: ConnectRequest) => boolean)

/**
 * Which request headers a connection keeps in its `connectInfo.headers`, for
 * its whole life, as Phoenix's `connect_info` option chooses: `xHeaders`
 * (every `x-*` header), `userAgent` (`user-agent`), `traceContextHeaders`
 * (`traceparent`, `tracestate`) and `headers` by name. By default none, as
 * in Phoenix: an open connection holds no other part of its request.
 *
 * @since 0.1.0
 * @category models
 */
export interface KeptHeaders {
  readonly xHeaders?: boolean | undefined
  readonly userAgent?: boolean | undefined
  readonly traceContextHeaders?: boolean | undefined
  /** Headers to keep by name, case-insensitively. */
  readonly headers?: ReadonlyArray<string> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Where the socket is mounted; default `/socket`. */
  readonly path?: `/${string}` | undefined
  /** A connection from which nothing arrives for this long is closed; default 60 seconds. */
  readonly heartbeatTimeout?: Duration.DurationInput | undefined
  readonly checkOrigin?: CheckOrigin | undefined
  /** The largest frame accepted, in bytes; default 1 MiB. Larger frames close the connection with 1009. */
  readonly maxFrameSize?: number | undefined
  /**
   * How deeply a received payload may nest arrays and objects (`{}` is 1);
   * default 64. A frame nested deeper is malformed: the connection is closed
   * with 1007 before any handler sees it.
   */
  readonly maxNestingDepth?: number | undefined
  /**
   * The largest message a channel sends, in bytes of its encoded frame;
   * default `maxFrameSize`. `conn.push`, `conn.reply`, `conn.broadcast` and
   * `conn.broadcastFrom` fail with `MessageTooLarge` past it, sending nothing.
   */
  readonly maxOutboundSize?: number | undefined
  /** How many channels one connection may join; default 100. */
  readonly maxChannels?: number | undefined
  /**
   * How many bytes may wait to be written to a client that does not read
   * before it is disconnected; default 1 MiB. It is dropped without a close
   * frame (which would wait behind what it does not read): its TCP
   * connection is closed, and the client sees 1006.
   */
  readonly outboundBufferLimit?: number | undefined
  /** How many received frames may wait to be handled, by the socket or by one channel, before the connection is closed (1008); default 1,000. */
  readonly inboundQueueLimit?: number | undefined
  /** The request headers a connection keeps; default none. */
  readonly connectInfo?: KeptHeaders | undefined
  /**
   * The level of the socket's logs, written through Effect's `Logger` as
   * Phoenix writes them: each connect, each join (`JOINED <topic> in <time>`
   * or `REFUSED JOIN ...`, with its parameters) and each handled event
   * (`HANDLED <event> INCOMING ON <topic> in <time>`, with its payload).
   * Phoenix's levels by default: connects and joins at `"Info"`, events at
   * `"Debug"` (below Effect's default minimum level, so not printed unless
   * it is lowered). A level sets connects and joins; an object sets each
   * kind; `false` turns them off.
   */
  readonly logLevel?: LogLevel | false | {
    readonly connect?: LogLevel | false | undefined
    readonly join?: LogLevel | false | undefined
    readonly event?: LogLevel | false | undefined
  } | undefined
  /**
   * What is never logged of connect params, join params and event payloads,
   * at any depth: the value of any key containing one of these strings shows
   * as `"[FILTERED]"`; default `["password"]`, as Phoenix. `{ keep: [...] }`
   * shows the values of those keys only.
   */
  readonly filterParameters?: ReadonlyArray<string> | { readonly keep: ReadonlyArray<string> } | undefined
  /** The long-poll endpoint `<path>/longpoll` (see `LongPoll`): its options, or `false` to serve none; served by default. */
  readonly longPoll?: LongPoll.Options | false | undefined
}

/**
 * A log level by name, as Effect's `LogLevel.Literal` (the `logLevel`
 * option also takes `false`: no log).
 *
 * @since 0.1.0
 * @category models
 */
export type LogLevel = "All" | "Fatal" | "Error" | "Warning" | "Info" | "Debug" | "Trace" | "None"

/**
 * What admission reads of a request, as a transport's server gives it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectRequest {
  readonly transport: ConnectInfo["transport"]
  /** The request's URL (a path and query string will do): `vsn` and the connect parameters. */
  readonly url: string
  /** The request headers, lower-case names. */
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly remoteAddress: Option.Option<string>
  /** The peer's port, where the server knows it. */
  readonly remotePort?: number | undefined
  /** The scheme of the server's connection (`https` over TLS); default `http`. */
  readonly scheme?: "http" | "https" | undefined
  /** The token the client offered, decoded. */
  readonly authToken: Option.Option<string>
}

/**
 * A request the socket refused, with the HTTP status and body to answer: 400
 * (not a request for this transport), 403 (`vsn` or origin refused), what
 * the `connect` hook's `ConnectRefused` carries (403 and no body by
 * default), 500 (`connect` failed). Every transport's server answers with it.
 *
 * @since 0.1.0
 * @category errors
 */
export class Refused extends Data.TaggedError("Refused")<{
  readonly status: number
  /** The response body; empty when absent. */
  readonly body?: string | undefined
}> {}

/**
 * A connection accepted on a transport.
 *
 * @since 0.1.0
 * @category models
 */
export interface Accepted {
  /** Handles the connection's frames until its transport closes; run it once, in the connection's fiber. */
  readonly run: Effect.Effect<void>
}

const TypeId: unique symbol = Symbol.for("@effect-channels/ChannelSocket")

/**
 * A socket: its options, and the handler, broker and broadcaster its
 * connections run with, read once when it is made.
 *
 * @since 0.1.0
 * @category models
 */
export interface ChannelSocket {
  readonly [TypeId]: typeof TypeId
  /** Where it is mounted, e.g. `/socket`. */
  readonly path: `/${string}`
  /** The largest frame it accepts, in bytes: a transport's server enforces it as early as it can. */
  readonly maxFrameSize: number
  /**
   * Admits `request` (`vsn`, origin, the handler's `connect`) and, once
   * admitted, opens its transport with `open` and serves the connection on
   * it. What is opened goes to `scope`, which the caller closes when the
   * connection's `run` has ended. Fails with {@link Refused} before `open`
   * is called, or with what `open` fails with.
   */
  readonly accept: <E, R>(
    request: ConnectRequest,
    open: (scope: Scope.Scope) => Effect.Effect<Opened, E, R>,
    scope: Scope.Scope
  ) => Effect.Effect<Accepted, Refused | E, R>
}

class ChannelSocketImpl implements ChannelSocket {
  readonly [TypeId]: typeof TypeId = TypeId
  constructor(readonly options: internal.Resolved, readonly services: internal.Services) {}
  get path() {
    return this.options.path
  }
  get maxFrameSize() {
    return this.options.maxFrameSize
  }
  accept<E, R>(
    request: ConnectRequest,
    open: (scope: Scope.Scope) => Effect.Effect<Opened, E, R>,
    scope: Scope.Scope
  ): Effect.Effect<Accepted, Refused | E, R> {
    return Effect.mapError(
      internal.accept(request, open, scope, this.options, this.services),
      (error) => isRefusal(error) ? new Refused({ status: error.status, body: error.body }) : error
    )
  }
  toJSON() {
    return { _id: "ChannelSocket", path: this.options.path }
  }
}

const isRefusal = (u: unknown): u is internal.Refusal =>
  typeof u === "object" && u !== null && "status" in u && "refused" in u

/**
 * Makes a socket with `options`, for the handler, broker and broadcaster in
 * context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<ChannelSocket, never, ChannelHandler | Broker | ChannelBroadcaster> =>
  makeResolved(internal.resolveOptions(options))

const makeResolved = (resolved: internal.Resolved) =>
  Effect.map(
    Effect.all({ handler: ChannelHandler, broker: Broker, broadcaster: ChannelBroadcaster, telemetry }),
    (services): ChannelSocket => new ChannelSocketImpl(resolved, services)
  )

/**
 * A socket to serve: its handler, as a `ChannelHandler` layer, and its
 * options. Phoenix's `socket "/socket", UserSocket, ...` in an endpoint.
 *
 * @since 0.1.0
 * @category models
 */
export interface Mount<E = never, R = never> {
  readonly handler: Layer.Layer<ChannelHandler, E, R>
  readonly options: Options
}

/**
 * @since 0.1.0
 * @category models
 */
export declare namespace Mount {
  /** What building the handler of any of `M` may fail with. */
  export type Error<M> = M extends Mount<infer E, infer _R> ? E : never
  /** What the handler of any of `M` requires. */
  export type Context<M> = M extends Mount<infer _E, infer R> ? R : never
}

/**
 * A socket served with its own `handler` and `options` (`path` above all),
 * next to others on one server.
 *
 * ```ts
 * NodeChannelServer.layer(createServer, { port: 4000 }, {
 *   sockets: [
 *     ChannelSocket.mount(UserChannels, { path: "/socket" }),
 *     ChannelSocket.mount(AdminChannels, { path: "/admin", checkOrigin: false })
 *   ]
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const mount = <E = never, R = never>(
  handler: Layer.Layer<ChannelHandler, E, R>,
  options: Options = {}
): Mount<E, R> => ({ handler, options })

/**
 * Makes the socket of a {@link Mount}: its handler layer is built into the
 * scope, with the layers built around it (a layer shared with other sockets
 * or the application is built once), and the broker and broadcaster in
 * context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMounted = <E, R>(
  mounted: Mount<E, R>
): Effect.Effect<ChannelSocket, E, R | Broker | ChannelBroadcaster | Scope.Scope> =>
  Effect.gen(function*() {
    const memoMap = yield* Layer.CurrentMemoMap
    const context = yield* Layer.buildWithMemoMap(mounted.handler, memoMap, yield* Effect.scope)
    return yield* Effect.provide(make(mounted.options), context)
  })

const authTokenPrefix = "base64url.bearer.phx."

/**
 * The token a client offered as a `base64url.bearer.phx.<token>` subprotocol.
 *
 * @since 0.1.0
 * @category utils
 */
export const authTokenFromProtocols = (header: string | undefined): Option.Option<string> => {
  const offered = header?.split(",").map((protocol) => protocol.trim()).find((protocol) =>
    protocol.startsWith(authTokenPrefix)
  )
  if (offered === undefined) return Option.none()
  const encoded = offered.slice(authTokenPrefix.length).replace(/-/g, "+").replace(/_/g, "/")
  try {
    const binary = atob(encoded)
    return Option.some(new TextDecoder().decode(Uint8Array.from(binary, (char) => char.charCodeAt(0))))
  } catch {
    return Option.none()
  }
}

/**
 * The {@link ConnectRequest} of a WebSocket upgrade request, or a refusal
 * (400) for anything but a `GET`: what every WebSocket server checks before
 * `accept`. `upgrade` is the request's `Upgrade` header where the server
 * has not checked it already.
 *
 * @since 0.1.0
 * @category utils
 */
export const websocketRequest = (request: {
  readonly method: string
  readonly url: string
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly remoteAddress: Option.Option<string>
  readonly remotePort?: number | undefined
  readonly scheme?: "http" | "https" | undefined
}): Effect.Effect<ConnectRequest, Refused> =>
  request.method !== "GET" || request.headers["upgrade"]?.toLowerCase() !== "websocket"
    ? Effect.fail(new Refused({ status: 400 }))
    : Effect.succeed({
      transport: "websocket",
      url: request.url,
      headers: request.headers,
      remoteAddress: request.remoteAddress,
      remotePort: request.remotePort,
      scheme: request.scheme,
      authToken: authTokenFromProtocols(request.headers["sec-websocket-protocol"])
    })

/**
 * The answer to a refused upgrade: its status and body. The connection is
 * not reused, as the client would wait on it.
 */
const refusal = (refused: Refused) =>
  refused.body === undefined || refused.body === ""
    ? HttpServerResponse.empty({ status: refused.status, headers: Headers.fromInput({ connection: "close" }) })
    : HttpServerResponse.text(refused.body, { status: refused.status, headers: Headers.fromInput({ connection: "close" }) })

/**
 * The peer's port and the scheme, from the platform's own request where it
 * has them (Node's `IncomingMessage` and its `net.Socket` or `tls.TLSSocket`):
 * `HttpServerRequest` gives the remote address only.
 */
const sourceConnection = (source: unknown): { readonly remotePort?: number; readonly scheme?: "http" | "https" } => {
  const socket = typeof source === "object" && source !== null
    ? (source as { readonly socket?: { readonly remotePort?: unknown; readonly encrypted?: unknown } }).socket
    : undefined
  if (typeof socket !== "object" || socket === null) return {}
  return {
    ...(typeof socket.remotePort === "number" ? { remotePort: socket.remotePort } : {}),
    scheme: socket.encrypted === true ? "https" : "http"
  }
}

/**
 * The WebSocket endpoint of `socket` as an HTTP handler: a `GET` with
 * `Upgrade: websocket` (anything else is 400).
 *
 * @since 0.1.0
 * @category handlers
 */
export const websocketOf = (
  socket: ChannelSocket
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest> =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const server = Option.getOrElse(yield* Effect.serviceOption(WebSocket.WebSocketServer), () => WebSocket.platform)
    return yield* websocketRequest({
      method: request.method,
      url: request.url,
      headers: request.headers,
      remoteAddress: request.remoteAddress,
      ...sourceConnection(request.source)
    }).pipe(
      Effect.flatMap((connectRequest) =>
        Effect.scopeWith((scope) =>
          Effect.flatMap(
            socket.accept(connectRequest, (scope) =>
              Scope.extend(server.upgrade(request, { maxFrameSize: socket.maxFrameSize }), scope), scope),
            (accepted) => accepted.run
          )
        ).pipe(Effect.scoped)
      ),
      Effect.as(HttpServerResponse.empty()),
      Effect.catchAll((error) =>
        error._tag === "Refused"
          ? Effect.succeed(refusal(error))
          : Effect.as(Effect.annotateLogs(Effect.logWarning("websocket upgrade failed"), "error", String(error)), HttpServerResponse.empty())
      )
    )
  })

/**
 * The WebSocket endpoint as an HTTP handler, for a socket with `options`.
 *
 * @since 0.1.0
 * @category handlers
 */
export const websocket = (
  options: Options = {}
): Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  never,
  HttpServerRequest.HttpServerRequest | ChannelHandler | Broker | ChannelBroadcaster
> => {
  // Resolved once, not for every request.
  const socket = makeResolved(internal.resolveOptions(options))
  return Effect.flatMap(socket, websocketOf)
}

/**
 * The long-poll endpoint as an HTTP handler, for a socket with `options`:
 * one socket and one table of sessions, made on the first request. A route
 * has no scope of its own to put sessions in: they live until they end,
 * closed by the runtime or not polled for 1.5 windows, also after the
 * server has stopped. (`NodeChannelServer` ends them with the server.)
 *
 * @since 0.1.0
 * @category handlers
 */
export const longPoll = (
  options: Options = {}
): Effect.Effect<
  HttpServerResponse.HttpServerResponse,
  never,
  HttpServerRequest.HttpServerRequest | ChannelHandler | Broker | ChannelBroadcaster
> => {
  const server = Effect.runSync(Effect.cached(
    Effect.flatMap(
      Effect.zip(make(options), Scope.make()),
      ([socket, scope]) => Scope.extend(LongPoll.make(socket, options.longPoll || {}), scope)
    )
  ))
  return Effect.flatMap(server, (server) => server.handle)
}

/**
 * An `HttpRouter` serving the socket at `path` (default `/socket`):
 * `GET <path>/websocket`, and `<path>/longpoll` unless `longPoll` is `false`.
 *
 * @since 0.1.0
 * @category routers
 */
export const router = (
  options: Options = {}
): HttpRouter.HttpRouter<never, ChannelHandler | Broker | ChannelBroadcaster> => {
  const path = options.path ?? "/socket"
  const routes = HttpRouter.empty.pipe(HttpRouter.all(`${path}/websocket`, websocket(options)))
  return options.longPoll === false ? routes : HttpRouter.all(routes, `${path}/longpoll`, longPoll(options))
}

/**
 * An `HttpRouter` serving several sockets, each at its `path` with its own
 * handler and options (`<path>/websocket`, and `<path>/longpoll` unless its
 * `longPoll` is `false`): the handler layers are built once, and the
 * long-poll sessions live, in the scope.
 * Serve it with `Layer.unwrapScoped`:
 *
 * ```ts
 * const Server = Layer.unwrapScoped(Effect.map(
 *   ChannelSocket.routerOf([
 *     ChannelSocket.mount(UserChannels, { path: "/socket" }),
 *     ChannelSocket.mount(AdminChannels, { path: "/admin" })
 *   ]),
 *   (sockets) => HttpServer.serve(HttpRouter.concat(routes, sockets))
 * ))
 * ```
 *
 * @since 0.1.0
 * @category routers
 */
export const routerOf = <const M extends ReadonlyArray<Mount<unknown, unknown>>>(
  mounts: M
): Effect.Effect<
  HttpRouter.HttpRouter,
  Mount.Error<M[number]>,
  Mount.Context<M[number]> | Broker | ChannelBroadcaster | Scope.Scope
> => {
  const paths = mounts.map((mounted) => mounted.options.path ?? "/socket")
  const duplicate = paths.find((path, index) => paths.indexOf(path) !== index)
  if (duplicate !== undefined) return Effect.dieMessage(`ChannelSocket.routerOf: two sockets at ${duplicate}`)
  return Effect.reduce(
    mounts as ReadonlyArray<Mount<Mount.Error<M[number]>, Mount.Context<M[number]>>>,
    HttpRouter.empty as HttpRouter.HttpRouter,
    (router, mounted) =>
      Effect.flatMap(makeMounted(mounted), (socket) => {
        const routes = HttpRouter.all(router, `${socket.path}/websocket`, websocketOf(socket))
        const longPoll = mounted.options.longPoll
        return longPoll === false
          ? Effect.succeed(routes)
          : Effect.map(LongPoll.make(socket, longPoll ?? {}), (server) =>
            HttpRouter.all(routes, `${socket.path}/longpoll`, server.handle))
      })
  )
}
