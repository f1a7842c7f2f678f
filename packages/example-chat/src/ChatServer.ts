/**
 * The chat server as a layer: the lobby channel at `/socket` (WebSocket at
 * `/socket/websocket`), `PUT /broadcast` to post into the lobby from outside
 * any channel, the chat page at `/`, and `GET /metrics` (Prometheus' text
 * format) unless metrics are off. With a Redis URL, the node joins the
 * others on that Redis: broadcasts and `PUT /broadcast` reach every node's
 * members.
 */
import { ChannelBroadcaster, ChannelMetrics } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import { ClusterConnections, RedisBroker } from "@effect-channels/redis"
import * as HttpRouter from "@effect/platform/HttpRouter"
import type { ServeError } from "@effect/platform/HttpServerError"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import { createServer } from "node:http"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as LobbyChannel from "./LobbyChannel.js"
import * as Telemetry from "./Telemetry.js"

const page = readFileSync(new URL("../public/index.html", import.meta.url), "utf8")
const phoenixClient = readFileSync(
  join(dirname(createRequire(import.meta.url).resolve("phoenix")), "phoenix.min.js"),
  "utf8"
)

const PostedMessage = Schema.Struct({ user: Schema.String, body: Schema.String })

const postToLobby = Effect.gen(function*() {
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
    RequestError: (error) => HttpServerResponse.json({ error: error.message }, { status: 400 })
  })
)

export const router = HttpRouter.empty.pipe(
  HttpRouter.get("/", HttpServerResponse.html(page)),
  HttpRouter.get(
    "/phoenix.js",
    HttpServerResponse.text(phoenixClient, { contentType: "text/javascript; charset=utf-8" })
  ),
  HttpRouter.put("/broadcast", postToLobby)
)

export interface ChannelsOptions extends LobbyChannel.Options {
  /** A Redis to join the other nodes on (`redis://127.0.0.1:6379`); none: this process alone. */
  readonly redisUrl?: string | undefined
  /** The prefix of the chat's Redis channels and keys (default `chat`): the nodes of one chat share it. */
  readonly redisPrefix?: string | undefined
}

/**
 * The channels of the chat: the lobby, over the in-process broker, or over
 * Redis with `redisUrl`.
 */
export const channels = (options: ChannelsOptions = {}) =>
  LobbyChannel.layerWith(options).pipe(Layer.provideMerge(
    options.redisUrl === undefined
      ? ChannelBroadcaster.layerLocal
      : RedisBroker.layerBroadcaster({ url: options.redisUrl, prefix: options.redisPrefix ?? "chat" })
  ))

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
}

/** The chat served on a Node HTTP server listening on `host:port` (port 0: any free port). */
export const layer = (options: Options) => {
  const served = (routes: typeof router) =>
    routes.pipe(
      HttpServer.serve(),
      HttpServer.withLogAddress,
      Layer.provideMerge(
        NodeChannelServer.layer(createServer, { host: options.host, port: options.port }, { path: "/socket" }).pipe(
          Layer.mapError(listenError(options.host, options.port))
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
