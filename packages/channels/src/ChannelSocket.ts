/**
 * Serves a Phoenix socket over HTTP: `ChannelSocket.router()` is an
 * `HttpRouter` with the WebSocket endpoint at `/socket/websocket`, ready to be
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
 * parameters and the auth token the client offered (refused: 403).
 *
 * @since 0.1.0
 */
import * as Headers from "@effect/platform/Headers"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Broker } from "./Broker.js"
import type { ChannelBroadcaster } from "./ChannelBroadcaster.js"
import type { ConnectInfo } from "./ChannelConn.js"
import type { Connected } from "./ChannelHandler.js"
import { ChannelHandler, ConnectRefused } from "./ChannelHandler.js"
import * as Serializer from "./protocol/Serializer.js"
import * as Connection from "./runtime/Connection.js"
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
  /** How many channels one connection may join; default 100. */
  readonly maxChannels?: number | undefined
  /**
   * How many bytes may wait to be written to a client that does not read
   * before it is disconnected (close code 1013); default 1 MiB.
   */
  readonly outboundBufferLimit?: number | undefined
  /** How many received frames may wait to be handled, by the socket or by one channel, before the connection is closed (1008); default 1,000. */
  readonly inboundQueueLimit?: number | undefined
}

/** @internal */
export const resolveOptions = (options: Options = {}): Connection.Options => ({
  heartbeatTimeout: Duration.decode(options.heartbeatTimeout ?? "60 seconds"),
  maxChannels: options.maxChannels ?? 100,
  maxFrameSize: options.maxFrameSize ?? 1024 * 1024,
  outboundBufferLimit: options.outboundBufferLimit ?? 1024 * 1024,
  inboundQueueLimit: options.inboundQueueLimit ?? 1000
})

const originAllowed = (check: CheckOrigin, origin: string, request: ConnectRequest): boolean => {
  if (check === false) return true
  if (typeof check === "function") return check(origin, request)
  const parsed = parseOrigin(origin)
  if (parsed === undefined) return false
  if (check === true) return parsed.host === request.headers["host"]
  return check.some((allowed) => {
    const rule = parseOrigin(allowed.startsWith("//") ? `any:${allowed}` : allowed)
    if (rule === undefined) return false
    if (rule.scheme !== "any:" && rule.scheme !== parsed.scheme) return false
    if (rule.port !== "" && rule.port !== parsed.port) return false
    return rule.hostname.startsWith("*.")
      ? parsed.hostname.endsWith(rule.hostname.slice(1))
      : rule.hostname === parsed.hostname
  })
}

const parseOrigin = (origin: string) => {
  try {
    const url = new URL(origin)
    return { scheme: url.protocol, host: url.host, hostname: url.hostname, port: url.port }
  } catch {
    return undefined
  }
}

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
 * What admission reads of a request: the transports give it their own.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectRequest {
  readonly url: string
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly remoteAddress: Option.Option<string>
}

/** @internal */
export interface Admitted {
  readonly serializer: Serializer.Serializer
  readonly connectInfo: ConnectInfo
  readonly connected: Connected
}

/**
 * Everything a transport checks before it opens a connection: the serializer
 * for `vsn`, the origin, and the handler's `connect`. Fails with the HTTP
 * status that refuses the request.
 *
 * @internal
 */
export const admit = (
  request: ConnectRequest,
  transport: ConnectInfo["transport"],
  options: Options,
  authToken: Option.Option<string>
): Effect.Effect<Admitted, { readonly status: 403 | 500 }, ChannelHandler> =>
  Effect.gen(function*() {
    const url = new URL(request.url, "http://localhost")
    const vsn = url.searchParams.get("vsn") ?? undefined
    const serializer = Serializer.fromVsn(vsn)
    if (Option.isNone(serializer)) {
      yield* Effect.logDebug("refused: unsupported vsn", vsn)
      return yield* Effect.fail(forbidden)
    }
    const origin = request.headers["origin"]
    if (origin !== undefined && !originAllowed(options.checkOrigin ?? true, origin, request)) {
      yield* Effect.logDebug("refused: origin not allowed", origin)
      return yield* Effect.fail(forbidden)
    }
    const params: Record<string, string> = {}
    for (const [key, value] of url.searchParams) {
      if (key !== "vsn") params[key] = value
    }
    const connectInfo: ConnectInfo = {
      transport,
      vsn: serializer.value.vsn,
      params,
      headers: request.headers,
      remoteAddress: request.remoteAddress,
      authToken
    }
    const handler = yield* ChannelHandler
    const connected = yield* handler.connect(connectInfo).pipe(
      Effect.catchAllCause((cause) => {
        const refused = cause._tag === "Fail" && cause.error instanceof ConnectRefused
        return Effect.zipRight(
          refused
            ? Effect.logDebug("connect refused", cause.error.reason)
            : Effect.logError("connect failed", cause),
          Effect.fail(refused ? forbidden : { status: 500 as const })
        )
      })
    )
    return { serializer: serializer.value, connectInfo, connected }
  })

const forbidden = { status: 403 as const }

/**
 * Opens an admitted connection over an upgraded socket: its resources go to
 * `scope`, and it listens to the socket. Its `run` handles the frames until
 * the socket closes.
 *
 * @internal
 */
export const open = (
  scope: Scope.Scope,
  socket: WebSocket.UpgradedSocket,
  admitted: Admitted,
  options: Connection.Options
): Effect.Effect<Connection.Connection, never, ChannelHandler | Broker | ChannelBroadcaster> =>
  Effect.tap(
    Connection.make({
      transport: socket.transport,
      serializer: admitted.serializer,
      connectInfo: admitted.connectInfo,
      id: admitted.connected.id,
      assigns: admitted.connected.assigns ?? {},
      options
    }, scope),
    (connection) => Scope.extend(socket.listen(connection), scope)
  )

/**
 * Runs an admitted connection over an upgraded socket until the socket
 * closes, in the caller's fiber; its resources go to `scope`.
 *
 * @internal
 */
export const serve = (
  scope: Scope.Scope,
  socket: WebSocket.UpgradedSocket,
  admitted: Admitted,
  options: Connection.Options
): Effect.Effect<void, never, ChannelHandler | Broker | ChannelBroadcaster> =>
  Effect.flatMap(open(scope, socket, admitted, options), (connection) => connection.run)

/** A refused upgrade: the connection is not reused, as the client would wait on it. */
const refusal = (status: number) => HttpServerResponse.empty({ status, headers: Headers.fromInput({ connection: "close" }) })

/**
 * The WebSocket endpoint as an HTTP handler: a `GET` with `Upgrade: websocket`
 * (anything else is 400).
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
  const resolved = resolveOptions(options)
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const upgrade = Option.getOrUndefined(Headers.get(request.headers, "upgrade"))?.toLowerCase()
    if (request.method !== "GET" || upgrade !== "websocket") return refusal(400)
    const authToken = Option.flatMap(Headers.get(request.headers, "sec-websocket-protocol"), authTokenFromProtocols)
    const admitted = yield* Effect.either(admit(request, "websocket", options, authToken))
    if (admitted._tag === "Left") return refusal(admitted.left.status)
    const server = Option.getOrElse(yield* Effect.serviceOption(WebSocket.WebSocketServer), () => WebSocket.platform)
    yield* Effect.scopeWith((scope) =>
      Effect.flatMap(
        server.upgrade(request, { maxFrameSize: resolved.maxFrameSize }),
        (socket) => serve(scope, socket, admitted.right, resolved)
      )
    ).pipe(
      Effect.scoped,
      Effect.catchAll((error) => Effect.logWarning("websocket upgrade failed", error))
    )
    return HttpServerResponse.empty()
  })
}

/**
 * An `HttpRouter` serving the socket at `path` (default `/socket`):
 * `GET <path>/websocket`.
 *
 * @since 0.1.0
 * @category routers
 */
export const router = (
  options: Options = {}
): HttpRouter.HttpRouter<never, ChannelHandler | Broker | ChannelBroadcaster> =>
  HttpRouter.empty.pipe(HttpRouter.all(`${options.path ?? "/socket"}/websocket`, websocket(options)))
