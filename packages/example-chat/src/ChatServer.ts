/**
 * The chat server as a layer: the lobby channel at `/socket` (WebSocket at
 * `/socket/websocket`), `PUT /broadcast` to post into the lobby from outside
 * any channel (a body of at most {@link maxBodySize}, else 413, with a
 * `Content-Length`, else 411), and the chat page at `/`.
 */
import { ChannelBroadcaster } from "@effect-channels/core"
import { NodeChannelServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import { readFileSync } from "node:fs"
import { createServer } from "node:http"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as LobbyChannel from "./LobbyChannel.js"

const page = readFileSync(new URL("../public/index.html", import.meta.url), "utf8")
const phoenixClient = readFileSync(
  join(dirname(createRequire(import.meta.url).resolve("phoenix")), "phoenix.min.js"),
  "utf8"
)

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
  return yield* HttpServerResponse.json({ connected: yield* broadcaster.connected })
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
  HttpRouter.put("/broadcast", postToLobby)
)

/** The channels of the chat: the lobby, over the in-process broker. */
export const channels = (options: LobbyChannel.Options = {}) =>
  LobbyChannel.layerWith(options).pipe(Layer.provideMerge(ChannelBroadcaster.layerLocal))

/** The chat served on a Node HTTP server listening on `host:port` (port 0: any free port). */
export const layer = (
  options: { readonly host: string; readonly port: number } & LobbyChannel.Options
) =>
  router.pipe(
    HttpServer.serve(),
    HttpServer.withLogAddress,
    Layer.provideMerge(NodeChannelServer.layer(createServer, { host: options.host, port: options.port }, { path: "/socket" })),
    Layer.provide(channels(options))
  )
