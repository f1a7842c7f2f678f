/**
 * The long-poll transport, for clients whose WebSocket cannot get through
 * (some proxies and mobile networks): the `phoenix` client's `LongPoll`,
 * or its fallback (`longPollFallbackMs`), talks to it unchanged. Served at
 * `<path>/longpoll` by `ChannelSocket.router` and by `NodeChannelServer`.
 *
 * As Phoenix serves it, every answer HTTP 200 with the status in its JSON body:
 *
 * - `GET` without a session token opens a session: the socket admits it as
 *   any connection (`vsn`, origin, `connect`, with the auth token of the
 *   `X-Phoenix-AuthToken` header) and answers
 *   `{"status":410,"token":T,"messages":[]}`; a refused connect is
 *   `{"status":403}`.
 * - `GET` with the token (`?token=T` or the `X-Phoenix-Longpoll-Token`
 *   header) is a poll: `{"status":200,"token":T,"messages":[...]}` as soon
 *   as something is queued, or `{"status":204,...}` after the poll window.
 *   Binary messages are base64 strings. A poll that arrives while another of
 *   the same session waits takes the messages from then on; the older one
 *   waits out its window and is answered 204, as in Phoenix.
 * - `POST` with the token and `Content-Type: application/x-ndjson`: one
 *   message per line, `[` starts a JSON message, anything else is a base64
 *   binary message. At most 100 lines are handled (the client sends at most
 *   100 per POST); the answer says how many: `{"status":200,"handled":N}`.
 * - A session gone (ended, or never there) is `{"status":410}`: the client
 *   opens a new one and rejoins its channels. A token that does not verify
 *   (forged, altered, expired) names no session: a `GET` with it opens a new
 *   session, as in Phoenix (a connect parameter may be named `token`), a
 *   `POST` is answered 410.
 * - `OPTIONS` is the CORS preflight.
 *
 * A session is a connection of the same runtime as a WebSocket one, with
 * the same `Scope`, channel fibers and guarantees (`leave` and `disconnect`
 * run once); what it writes is queued for the next poll, bounded by
 * `outboundBufferLimit` like a WebSocket's buffer (past it, the session
 * ends). The client sends no heartbeats over long-poll: a session not polled
 * for 1.5 windows ends instead.
 *
 * Tokens are signed with HMAC-SHA256 (Web Crypto) and name the session and
 * when it was issued, nothing else. The secret comes from the `secret`
 * option or the `EFFECT_CHANNELS_SECRET` configuration; without either a
 * random one is generated, with a warning: every node that may receive a
 * session's requests needs the same secret. A request for a session another
 * node opened goes to that node through the `SessionRelay` in context (over
 * Redis with `@effect-channels/redis`'s `RedisLongPoll`); the default relays
 * nothing and answers it 410.
 *
 * @since 0.1.0
 */
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import type * as Redacted from "effect/Redacted"
import type * as Scope from "effect/Scope"
import type { ChannelSocket } from "../ChannelSocket.js"
import * as internal from "../internal/longpoll.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long a poll waits for messages before it is answered 204; default 10 seconds. A session not polled for 1.5 windows ends. */
  readonly window?: Duration.DurationInput | undefined
  /** The HMAC secret of session tokens; default the `EFFECT_CHANNELS_SECRET` configuration, else a random one (with a warning). */
  readonly secret?: string | Redacted.Redacted<string> | undefined
  /** How long a session token is valid; default 14 days, as Phoenix. */
  readonly tokenMaxAge?: Duration.DurationInput | undefined
}

/**
 * A socket's long-poll sessions, and the HTTP handler that serves them.
 *
 * @since 0.1.0
 * @category models
 */
export interface LongPollServer {
  /** Serves one request to `<path>/longpoll`: a poll, a POST, a preflight. */
  readonly handle: Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>
  /** The sessions open now. */
  readonly size: () => number
}

/**
 * The long-poll server of `socket`. Its sessions are fibers of the scope:
 * when it closes, each session ends (`leave` and `disconnect` run).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (socket: ChannelSocket, options: Options = {}): Effect.Effect<LongPollServer, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) =>
    Effect.map(internal.make(socket, options, scope), (server) => ({
      handle: server.handle,
      size: () => server.sessions.size
    })))

/**
 * `app`, with the requests to `<path>/longpoll` served by `server` instead:
 * how a server that does not route (`NodeChannelServer`) mounts the
 * endpoint.
 *
 * @since 0.1.0
 * @category combinators
 */
export const mount = <E, R>(
  app: HttpApp.Default<E, R>,
  path: `/${string}`,
  server: LongPollServer
): HttpApp.Default<E, R | HttpServerRequest.HttpServerRequest> => {
  const endpoint = `${path}/longpoll`
  return Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
    const query = request.url.indexOf("?")
    const pathname = query === -1 ? request.url : request.url.slice(0, query)
    return pathname === endpoint ? server.handle : app
  })
}
