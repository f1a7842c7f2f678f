/**
 * Admission and opening, the one path every transport takes: the serializer
 * for `vsn`, the origin, the handler's `connect`, then the transport is
 * opened and the connection made on it.
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Broker } from "../Broker.js"
import type { ChannelBroadcaster } from "../ChannelBroadcaster.js"
import type { ConnectInfo, Peer, Uri } from "../ChannelConn.js"
import type { Connected, ConnectRefused } from "../ChannelHandler.js"
import { ChannelHandler, isConnectRefused } from "../ChannelHandler.js"
import type { CheckOrigin, ConnectRequest, KeptHeaders, Options } from "../ChannelSocket.js"
import * as Serializer from "../protocol/Serializer.js"
import * as Connection from "../runtime/Connection.js"
import type { Opened } from "../transport/Transport.js"
import { defaultFilterParameters, filterParams, formatDuration, logAbove, resolveLogLevels } from "./logging.js"
import type { Telemetry } from "./metrics.js"
import { connectSpan } from "./metrics.js"

/** What admission reads of a request. @internal */
export type Request = ConnectRequest

/** @internal */
export interface Resolved extends Connection.Options {
  readonly path: `/${string}`
  readonly checkOrigin: CheckOrigin
  readonly maxNestingDepth: number
  /** The headers a connection keeps, out of its request's. */
  readonly keepHeaders: (headers: Request["headers"]) => Readonly<Record<string, string>>
  /**
   * The transports' paths, made once: a connection's URI shares them
   * rather than keeping a slice of its request's URL, and the URL with it.
   */
  readonly transportPaths: ReadonlyArray<string>
}

const noHeaders: Readonly<Record<string, string>> = Object.freeze({})

const traceContextHeaders = ["traceparent", "tracestate"]

/** One function per socket, so that the choice is not read again for every connection. */
const headerKeeper = (kept: KeptHeaders): Resolved["keepHeaders"] => {
  const named = new Set((kept.headers ?? []).map((name) => name.toLowerCase()))
  if (kept.userAgent === true) named.add("user-agent")
  if (kept.traceContextHeaders === true) for (const name of traceContextHeaders) named.add(name)
  const xHeaders = kept.xHeaders === true
  if (named.size === 0 && !xHeaders) return () => noHeaders
  return (headers) => {
    let result: Record<string, string> | undefined
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined || !(named.has(name) || (xHeaders && name.startsWith("x-")))) continue
      ;(result ??= {})[name] = value
    }
    return result ?? noHeaders
  }
}

/** @internal */
export const resolveOptions = (options: Options = {}): Resolved => {
  const maxFrameSize = options.maxFrameSize ?? 1024 * 1024
  const path = options.path ?? "/socket"
  return {
    path,
    transportPaths: [`${path}/websocket`, `${path}/longpoll`],
    checkOrigin: options.checkOrigin ?? true,
    heartbeatTimeout: Duration.decode(options.heartbeatTimeout ?? "60 seconds"),
    maxChannels: options.maxChannels ?? 100,
    maxFrameSize,
    maxNestingDepth: options.maxNestingDepth ?? Serializer.defaultMaxNestingDepth,
    maxOutboundSize: options.maxOutboundSize ?? maxFrameSize,
    outboundBufferLimit: options.outboundBufferLimit ?? 1024 * 1024,
    inboundQueueLimit: options.inboundQueueLimit ?? 1000,
    keepHeaders: headerKeeper(options.connectInfo ?? {}),
    logLevels: resolveLogLevels(options.logLevel),
    filterParameters: options.filterParameters ?? defaultFilterParameters
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
 * A refused request: the HTTP status and body it is answered with and, when
 * the handler's `connect` refused it, its error.
 *
 * @internal
 */
export interface Refusal {
  readonly status: number
  readonly body: string
  readonly refused: ConnectRefused | undefined
}

/** @internal */
export interface Admitted {
  readonly serializer: Serializer.Serializer
  readonly connectInfo: ConnectInfo
  readonly connected: Connected
}

const refusal = (status: number, body = "", refused: ConnectRefused | undefined = undefined): Refusal => ({
  status,
  body,
  refused
})

const isErrorStatus = (status: number) => Number.isInteger(status) && status >= 400 && status <= 599

/** The answer to a `ConnectRefused`: its status (403 by default) and body, or 500 for a status that is no error. */
const refusalOf = (refused: ConnectRefused): Effect.Effect<Refusal> => {
  const status = refused.status ?? 403
  return isErrorStatus(status)
    ? Effect.succeed(refusal(status, refused.body ?? "", refused))
    : Effect.as(
      Effect.logError(`ConnectRefused with status ${status}: a refusal's status is 400 to 599; answered 500`),
      refusal(500, "", refused)
    )
}

/** The host and port of a `Host` header, as the URL parser reads them. */
interface HostPort {
  readonly host: string
  readonly port: number
}

const parseHost = (scheme: "http" | "https", host: string | undefined): HostPort => {
  let hostname = "localhost"
  let port = scheme === "https" ? 443 : 80
  if (host !== undefined) {
    try {
      const parsed = new URL(`${scheme}://${host}`)
      hostname = parsed.hostname
      if (parsed.port !== "") port = Number(parsed.port)
    } catch {
      // An unparsable Host header: the URI keeps the defaults.
    }
  }
  return { host: hostname, port }
}

// The last `Host` header parsed, per scheme: a server's clients nearly all
// send the same one, and a URL parse costs a connection more than the rest
// of its URI.
const lastHost = {
  http: { header: undefined as string | undefined, parsed: parseHost("http", undefined) },
  https: { header: undefined as string | undefined, parsed: parseHost("https", undefined) }
}

const hostOf = (scheme: "http" | "https", header: string | undefined): HostPort => {
  const last = lastHost[scheme]
  if (header !== last.header) {
    last.parsed = parseHost(scheme, header)
    last.header = header
  }
  return last.parsed
}

/** The URI the client addressed, as Phoenix's `connect_info[:uri]`: the host and port are the `Host` header's. */
const uriOf = (url: URL, request: Request, options: Resolved): Uri => {
  const scheme = request.scheme ?? "http"
  const { host, port } = hostOf(scheme, request.headers["host"])
  const pathname = url.pathname
  const path = options.transportPaths.find((known) => known === pathname) ?? pathname
  return { scheme, host, port, path, query: url.search.slice(1) }
}

const peerOf = (request: Request): Option.Option<Peer> =>
  Option.map(request.remoteAddress, (address) => ({ address, port: request.remotePort ?? 0 }))

const serializerName = (serializer: Serializer.Serializer) =>
  serializer.vsn === "1.0.0" ? "V1.JSONSerializer" : "V2.JSONSerializer"

/**
 * The connect log, as Phoenix writes it: the result, the socket, the time
 * `connect` took, the transport, the serializer and the parameters (with
 * `vsn`), filtered.
 */
const logConnect = (
  options: Resolved,
  request: Request,
  serializer: Serializer.Serializer,
  url: URL,
  result: "ok" | "error",
  nanos: bigint
): Effect.Effect<void> => {
  const level = options.logLevels.connect
  if (level === undefined) return Effect.void
  return logAbove(level, () => {
    const params = filterParams(Object.fromEntries(url.searchParams), options.filterParameters)
    const serializerLabel = serializerName(serializer)
    const duration = formatDuration(Number(nanos) / 1e6)
    return Effect.logWithLevel(
      level,
      `${result === "ok" ? "CONNECTED TO" : "REFUSED CONNECTION TO"} ${options.path} in ${duration}\n` +
        `  Transport: ${request.transport}\n` +
        `  Serializer: ${serializerLabel}\n` +
        `  Parameters: ${JSON.stringify(params)}`
    ).pipe(Effect.annotateLogs({
      socket: options.path,
      transport: request.transport,
      serializer: serializerLabel,
      params,
      result,
      duration
    }))
  })
}

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
      uri: uriOf(url, request, options),
      peer: peerOf(request),
      headers: options.keepHeaders(request.headers),
      authToken: request.authToken
    }
    // No clock read when connects are not logged.
    const start = options.logLevels.connect === undefined ? undefined : yield* Clock.currentTimeNanos
    const logged = (result: "ok" | "error") =>
      start === undefined ? Effect.void : Effect.flatMap(
        Clock.currentTimeNanos,
        (end) => logConnect(options, request, serializer.value, url, result, end - start)
      )
    const connected = yield* handler.connect(connectInfo).pipe(
      Effect.catchAllCause((cause) => {
        const failure = Option.getOrUndefined(Cause.failureOption(cause))
        return Effect.zipRight(
          logged("error"),
          isConnectRefused(failure)
            ? Effect.flatMap(refusalOf(failure), Effect.fail)
            : Effect.zipRight(Effect.logError("connect failed", cause), Effect.fail(refusal(500)))
        )
      })
    )
    yield* logged("ok")
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
            options: opened.heartbeats === false ? { ...options, heartbeatTimeout: Duration.infinity } : options
          }, scope, services),
          (connection) => Scope.extend(opened.listen(connection), scope)
        ))
  )
