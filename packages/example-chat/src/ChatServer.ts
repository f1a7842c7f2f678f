/**
 * The chat server as a layer: the lobby channel at `/socket` (WebSocket at
 * `/socket/websocket`), `PUT /broadcast` to post into the lobby from outside
 * any channel (a body of at most {@link maxBodySize}, else 413, with a
 * `Content-Length`, else 411), the chat page at `/` with its icon
 * (`/favicon.svg`, also answered at `/favicon.ico`, where browsers and tools
 * look without a link), the page's scripts (`/phoenix.js`, and
 * `/recoverable-channel.js` from `@effect-channels/client`), and
 * `GET /metrics` (Prometheus' text format) unless metrics are off. With a Redis URL, the node joins the others on that
 * Redis: broadcasts and `PUT /broadcast` reach every node's members, and
 * long-poll sessions work whichever node a request reaches.
 */
import { ChannelBroadcaster, ChannelHistory, ChannelMetrics, type ChannelSocket, SessionRelay } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import { ClusterConnections, RedisBroker, RedisLongPoll, RedisPresence } from "@effect-channels/redis"
import * as HttpRouter from "@effect/platform/HttpRouter"
import type { ServeError } from "@effect/platform/HttpServerError"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Data from "effect/Data"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import * as Http from "node:http"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as LobbyChannel from "./LobbyChannel.js"
import * as Telemetry from "./Telemetry.js"

const page = readFileSync(new URL("../public/index.html", import.meta.url), "utf8")
const icon = readFileSync(new URL("../public/favicon.svg", import.meta.url), "utf8")
const require_ = createRequire(import.meta.url)
const phoenixClient = readFileSync(join(dirname(require_.resolve("phoenix")), "phoenix.min.js"), "utf8")
// The client package's one module, as built (it imports nothing), from its `dist` whichever entry
// resolves (the workspace's source condition gives its TypeScript, which browsers cannot run; the
// chat's `start` builds it first); its source map is not served.
const clientRoot = dirname(dirname(require_.resolve("@effect-channels/client")))
const recoverableChannel = readFileSync(join(clientRoot, "dist", "RecoverableChannel.js"), "utf8")
  .replace(/\n\/\/# sourceMappingURL=.*\s*$/, "\n")

const PostedMessage = Schema.Struct({ user: Schema.String, body: Schema.String })

/**
 * The largest body `PUT /broadcast` reads, in bytes: a chat message. The
 * platform reads any size.
 */
export const maxBodySize = 64 * 1024

/** Refused before a byte of the body is read; the connection is not reused, its unread body would follow. */
const refused = (status: number, error: string) =>
  HttpServerResponse.json({ error }, { status, headers: { connection: "close" } })

const postToLobby = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  // The length is checked before the body is read, and Node's parser holds
  // the body to it. A chunked body has none: the platform would destroy the
  // request past the limit, with no answer, so it is refused with 411.
  const length = request.headers["content-length"]
  if (length === undefined) return yield* refused(411, "a Content-Length is required")
  if (Number(length) > maxBodySize) return yield* refused(413, `body over ${maxBodySize} bytes`)
  const message = yield* HttpServerRequest.schemaBodyJson(PostedMessage)
  const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
  yield* broadcaster.broadcast(LobbyChannel.lobby, "new:msg", message)
  const connected = yield* broadcaster.connected
  const cluster = yield* Effect.serviceOption(ClusterConnections.ClusterConnections)
  if (Option.isNone(cluster)) return yield* HttpServerResponse.json({ connected })
  // The cluster-wide count, unless Redis is down right now.
  const clusterConnected = yield* Effect.option(cluster.value.connected)
  return yield* HttpServerResponse.json({ connected, clusterConnected: Option.getOrNull(clusterConnected) })
}).pipe(
  Effect.catchTags({
    ParseError: (error) => HttpServerResponse.json({ error: error.message }, { status: 400 }),
    RequestError: (error) => HttpServerResponse.json({ error: error.message }, { status: 400 }),
    MessageTooLarge: (error) => HttpServerResponse.json({ error: error.message }, { status: 413 })
  })
)

export const router = HttpRouter.empty.pipe(
  HttpRouter.get("/", HttpServerResponse.html(page)),
  HttpRouter.get(
    "/phoenix.js",
    HttpServerResponse.text(phoenixClient, { contentType: "text/javascript; charset=utf-8" })
  ),
  HttpRouter.get(
    "/recoverable-channel.js",
    HttpServerResponse.text(recoverableChannel, { contentType: "text/javascript; charset=utf-8" })
  ),
  HttpRouter.get("/favicon.svg", HttpServerResponse.text(icon, { contentType: "image/svg+xml" })),
  HttpRouter.get("/favicon.ico", HttpServerResponse.text(icon, { contentType: "image/svg+xml" })),
  HttpRouter.put("/broadcast", postToLobby)
)

/** The lobby's history, by default: what a page that lost its connection for a while gets back. */
export const defaultHistory = { size: 100, ttl: "2 minutes" } as const

export interface ChannelsOptions extends LobbyChannel.Options {
  /**
   * How many of the lobby's last broadcasts are kept, for a page that lost
   * its connection to get what it missed when it rejoins (default 100; 0:
   * none kept, nothing recovered).
   */
  readonly historySize?: number | undefined
  /** How long they are kept (default 2 minutes). */
  readonly historyTtl?: Duration.DurationInput | undefined
  /** A Redis to join the other nodes on (`redis://127.0.0.1:6379`); none: this process alone. */
  readonly redisUrl?: string | undefined
  /** The prefix of the chat's Redis channels and keys (default `chat`): the nodes of one chat share it. */
  readonly redisPrefix?: string | undefined
}

/**
 * The channels of the chat: the lobby and its presence, in this process; or,
 * with `redisUrl`, over Redis: broadcasts through `RedisBroker`, presence
 * replicated by `RedisPresence`, so that the nodes are one chat. The lobby
 * keeps a history (`ChannelHistory`) unless `historySize` is 0.
 */
export const channels = (options: ChannelsOptions = {}) => {
  const size = options.historySize ?? defaultHistory.size
  // The broker keeps the lobby's history: in memory, or over Redis in Redis, shared by the nodes.
  const history = size === 0
    ? Layer.empty
    : ChannelHistory.layer({ [LobbyChannel.lobby]: { size, ttl: options.historyTtl ?? defaultHistory.ttl } })
  if (options.redisUrl === undefined) {
    return LobbyChannel.layerWith(options).pipe(
      Layer.provideMerge(ChannelBroadcaster.layerLocal.pipe(Layer.provide(history)))
    )
  }
  const redis = { url: options.redisUrl, prefix: options.redisPrefix ?? "chat" }
  return LobbyChannel.layerWith(options, RedisPresence.layerPresence(redis)).pipe(
    Layer.provideMerge(RedisBroker.layerBroadcaster(redis).pipe(Layer.provide(history)))
  )
}

/** The server could not listen: the address, and why (`EADDRINUSE`, `EACCES`, ...). */
export class ListenError extends Data.TaggedError("ListenError")<{
  readonly host: string
  readonly port: number
  readonly code: string
}> {
  override get message() {
    return `cannot listen on ${this.host}:${this.port}: ${this.code}`
  }
}

const listenError = (host: string, port: number) => (error: ServeError) => {
  const cause = error.cause as { readonly code?: unknown; readonly message?: unknown } | undefined
  const code = typeof cause?.code === "string" ? cause.code : String(cause?.message ?? error.message)
  return new ListenError({ host, port, code })
}

export interface Options extends ChannelsOptions {
  readonly host: string
  readonly port: number
  /** Whether effect-channels records metrics, served at `GET /metrics` (default true). */
  readonly metrics?: boolean | undefined
  /** Where the socket's spans go (default: no tracer, no spans). */
  readonly traces?: Telemetry.Traces | undefined
  /** The socket's logs (connects and joins at Info by default; `false`: none). */
  readonly logLevel?: ChannelSocket.Options["logLevel"]
}

/** The chat served on a Node HTTP server listening on `host:port` (port 0: any free port). */
export const layer = (options: Options) => {
  const served = (routes: typeof router) =>
    routes.pipe(
      HttpServer.serve(),
      HttpServer.withLogAddress,
      Layer.provideMerge(
        NodeChannelServer.layer(() => Http.createServer(), { host: options.host, port: options.port }, {
          path: "/socket",
          logLevel: options.logLevel
        }).pipe(
          Layer.mapError(listenError(options.host, options.port)),
          // Long-poll sessions served by whichever node a request reaches (every node needs the
          // same EFFECT_CHANNELS_SECRET).
          Layer.provide(
            options.redisUrl === undefined
              ? SessionRelay.layerLocal
              : RedisLongPoll.layer({ url: options.redisUrl, prefix: options.redisPrefix ?? "chat" })
          )
        )
      ),
      Layer.provide(channels(options))
    )
  if (options.metrics === false) {
    return served(router).pipe(Layer.provide(ChannelMetrics.layerDisabled))
  }
  const telemetry = Telemetry.make(options.traces ?? "none")
  // Provided to the server and the channels, which see its tracer when they are made.
  return served(router.pipe(telemetry.route)).pipe(Layer.provide(telemetry.layer))
}
