/**
 * Admission and opening, the one path every transport takes: the serializer
 * for `vsn`, the origin, the handler's `connect`, then the transport is
 * opened and the connection made on it.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Broker } from "../Broker.js"
import type { ChannelBroadcaster } from "../ChannelBroadcaster.js"
import type { ConnectInfo } from "../ChannelConn.js"
import type { Connected, ConnectRefused } from "../ChannelHandler.js"
import { ChannelHandler, isConnectRefused } from "../ChannelHandler.js"
import * as Serializer from "../protocol/Serializer.js"
import * as Connection from "../runtime/Connection.js"
import type { Telemetry } from "./metrics.js"
import { connectSpan } from "./metrics.js"
import type { Opened } from "../transport/Transport.js"

/** @internal */
export type CheckOrigin =
  | boolean
  | ReadonlyArray<string>
  | ((origin: string, request: Request) => boolean)

/** What admission reads of a request. @internal */
export interface Request {
  readonly transport: ConnectInfo["transport"]
  readonly url: string
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly remoteAddress: Option.Option<string>
  readonly authToken: Option.Option<string>
}

/** The options a socket is mounted with, as the public `ChannelSocket.Options`. @internal */
export interface Options {
  readonly path?: `/${string}` | undefined
  readonly heartbeatTimeout?: Duration.DurationInput | undefined
  readonly checkOrigin?: CheckOrigin | undefined
  readonly maxFrameSize?: number | undefined
  readonly maxNestingDepth?: number | undefined
  readonly maxOutboundSize?: number | undefined
  readonly maxChannels?: number | undefined
  readonly outboundBufferLimit?: number | undefined
  readonly inboundQueueLimit?: number | undefined
}

/** @internal */
export interface Resolved extends Connection.Options {
  readonly path: `/${string}`
  readonly checkOrigin: CheckOrigin
  readonly maxNestingDepth: number
}

/** @internal */
export const resolveOptions = (options: Options = {}): Resolved => {
  const maxFrameSize = options.maxFrameSize ?? 1024 * 1024
  return {
    path: options.path ?? "/socket",
    checkOrigin: options.checkOrigin ?? true,
    heartbeatTimeout: Duration.decode(options.heartbeatTimeout ?? "60 seconds"),
    maxChannels: options.maxChannels ?? 100,
    maxFrameSize,
    maxNestingDepth: options.maxNestingDepth ?? Serializer.defaultMaxNestingDepth,
    maxOutboundSize: options.maxOutboundSize ?? maxFrameSize,
    outboundBufferLimit: options.outboundBufferLimit ?? 1024 * 1024,
    inboundQueueLimit: options.inboundQueueLimit ?? 1000
  }
}

const originAllowed = (check: CheckOrigin, origin: string, request: Request): boolean => {
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

/**
 * A refused request: the HTTP status it is answered with and, when the
 * handler's `connect` refused it, its error.
 *
 * @internal
 */
export interface Refusal {
  readonly status: number
  readonly refused: ConnectRefused | undefined
}

/** @internal */
export interface Admitted {
  readonly serializer: Serializer.Serializer
  readonly connectInfo: ConnectInfo
  readonly connected: Connected
}

const refusal = (status: number, refused: ConnectRefused | undefined = undefined): Refusal => ({ status, refused })

/**
 * Everything checked before a transport is opened: the serializer for
 * `vsn`, the origin, and the handler's `connect`. Fails with the refusal.
 *
 * @internal
 */
export const admit = (
  request: Request,
  options: Resolved,
  handler: ChannelHandler["Type"]
): Effect.Effect<Admitted, Refusal> =>
  Effect.gen(function*() {
    const url = new URL(request.url, "http://localhost")
    const vsn = url.searchParams.get("vsn") ?? undefined
    const serializer = Serializer.fromVsn(vsn, { maxNestingDepth: options.maxNestingDepth })
    if (Option.isNone(serializer)) {
      yield* Effect.annotateLogs(Effect.logDebug("refused: unsupported vsn"), "vsn", String(vsn))
      return yield* Effect.fail(refusal(403))
    }
    const origin = request.headers["origin"]
    if (origin !== undefined && !originAllowed(options.checkOrigin, origin, request)) {
      yield* Effect.annotateLogs(Effect.logDebug("refused: origin not allowed"), "origin", origin)
      return yield* Effect.fail(refusal(403))
    }
    const params: Record<string, string> = {}
    for (const [key, value] of url.searchParams) {
      if (key !== "vsn") params[key] = value
    }
    const connectInfo: ConnectInfo = {
      transport: request.transport,
      vsn: serializer.value.vsn,
      params,
      headers: request.headers,
      remoteAddress: request.remoteAddress,
      authToken: request.authToken
    }
    const connected = yield* handler.connect(connectInfo).pipe(
      Effect.catchAllCause((cause) => {
        const failure = Option.getOrUndefined(Cause.failureOption(cause))
        return isConnectRefused(failure)
          ? Effect.zipRight(Effect.annotateLogs(Effect.logDebug("connect refused"), "reason", failure.reason), Effect.fail(refusal(403, failure)))
          : Effect.zipRight(Effect.logError("connect failed", cause), Effect.fail(refusal(500)))
      })
    )
    return { serializer: serializer.value, connectInfo, connected }
  })

/** The services a connection runs with, read once by the socket. @internal */
export interface Services {
  readonly handler: ChannelHandler["Type"]
  readonly broker: Broker["Type"]
  readonly broadcaster: ChannelBroadcaster["Type"]
  readonly telemetry: Telemetry
}

/**
 * Admits a request, then opens its transport with `open` and makes the
 * connection on it, listening; everything goes to `scope`. The connection's
 * `run` handles its frames until the transport closes.
 *
 * @internal
 */
export const accept = <E, R>(
  request: Request,
  open: (scope: Scope.Scope, admitted: Admitted) => Effect.Effect<Opened, E, R>,
  scope: Scope.Scope,
  options: Resolved,
  services: Services
): Effect.Effect<Connection.Connection, Refusal | E, R> =>
  // The span is admission's only: what is forked while it is open (the
  // transport's listener) would hold it for the life of the connection.
  Effect.flatMap(
    services.telemetry.tracing
      ? connectSpan(admit(request, options, services.handler), request.transport, request.url)
      : admit(request, options, services.handler),
    (admitted) =>
      Effect.flatMap(open(scope, admitted), (opened) =>
        Effect.tap(
          Connection.make({
            transport: opened.transport,
            serializer: admitted.serializer,
            connectInfo: admitted.connectInfo,
            id: admitted.connected.id,
            assigns: admitted.connected.assigns ?? {},
            options
          }, scope, services),
          (connection) => Scope.extend(opened.listen(connection), scope)
        ))
  )
