/**
 * The chat server as a layer: the lobby channel at `/socket` (WebSocket at
 * `/socket/websocket`), `PUT /broadcast` to post into the lobby from outside
 * any channel, and the chat page at `/` with its icon (`/favicon.svg`, also
 * answered at `/favicon.ico`, where browsers and tools look without a link).
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
import * as Http from "node:http"
import type { Socket } from "node:net"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"
import * as LobbyChannel from "./LobbyChannel.js"

const page = readFileSync(new URL("../public/index.html", import.meta.url), "utf8")
const icon = readFileSync(new URL("../public/favicon.svg", import.meta.url), "utf8")
const phoenixClient = readFileSync(
  join(dirname(createRequire(import.meta.url).resolve("phoenix")), "phoenix.min.js"),
  "utf8"
)

const PostedMessage = Schema.Struct({ user: Schema.String, body: Schema.String })

const postToLobby = Effect.gen(function*() {
  const message = yield* HttpServerRequest.schemaBodyJson(PostedMessage)
  const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
  yield* broadcaster.broadcast(LobbyChannel.lobby, "new:msg", message)
  return yield* HttpServerResponse.json({ connected: yield* broadcaster.connected })
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
  HttpRouter.get("/favicon.svg", HttpServerResponse.text(icon, { contentType: "image/svg+xml" })),
  HttpRouter.get("/favicon.ico", HttpServerResponse.text(icon, { contentType: "image/svg+xml" })),
  HttpRouter.put("/broadcast", postToLobby)
)

/**
 * A Node HTTP server whose `close` also ends the connections that have not
 * sent a request yet. Browsers open such connections ahead of need, and Node's
 * `close` waits for them until its own timeouts end them, so a shutdown or a
 * restart would hang while a browser is on the page. Connections
 * that carried a request are left to Node (idle ones are closed, busy ones
 * finish), and upgraded ones to the channel server (closed with 1001 first).
 */
export class ChatHttpServer extends Http.Server {
  readonly #unused = new Set<Socket>()

  constructor() {
    super()
    this.on("connection", (socket: Socket) => {
      this.#unused.add(socket)
      socket.once("close", () => this.#unused.delete(socket))
    })
    this.prependListener("request", (request: Http.IncomingMessage) => this.#unused.delete(request.socket))
    this.prependListener("upgrade", (request: Http.IncomingMessage) => this.#unused.delete(request.socket))
  }

  override close(callback?: (error?: Error) => void): this {
    for (const socket of this.#unused) socket.destroy()
    return super.close(callback)
  }
}

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
    Layer.provideMerge(NodeChannelServer.layer(() => new ChatHttpServer(), { host: options.host, port: options.port }, { path: "/socket" })),
    Layer.provide(channels(options))
  )
