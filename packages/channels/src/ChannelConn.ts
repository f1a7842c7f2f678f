/**
 * The handle a channel handler receives: one client's membership of one
 * topic. Through it a handler answers the join, replies, pushes to this
 * client, broadcasts to the topic, keeps per-channel and per-socket state and
 * leaves the channel from the server side.
 *
 * Pushes and broadcasts made while `join` runs are held back and sent right
 * after the join reply, so a client always sees its join reply first (what
 * Phoenix users do with `send(self(), :after_join)`). A refused join drops them.
 *
 * Messages from outside the client (Phoenix's `handle_info`): a fiber forked
 * with `conn.fork` runs for as long as the channel, pushing or broadcasting
 * as it pleases (a `Stream` run into `conn.push`, a periodic push, an
 * after-join message: forked in `join`, what it sends waits for the join
 * reply); `conn.subscribe(topic)` brings another topic's broadcasts to this
 * client, as Phoenix's `Endpoint.subscribe` does. Both are owned by the
 * channel's scope and end with the channel.
 *
 * ```ts
 * join: (conn) =>
 *   Effect.gen(function*() {
 *     // Every 30 seconds, for as long as the channel lives.
 *     yield* conn.fork(Effect.repeat(conn.push("ping", {}), Schedule.spaced("30 seconds")))
 *     // What any part of the app broadcasts to "user:42" reaches this client too.
 *     yield* conn.subscribe("user:42")
 *     return conn.allowJoin()
 *   })
 * ```
 *
 * The handle and the socket info are objects with methods, one per channel
 * and per connection (an idle connection holds them for as long as it is
 * open): call them on the handle, `conn.push(...)`, not detached from it.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Fiber from "effect/Fiber"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { ChannelEvent } from "./ChannelEvent.js"
import type { UnrecoverablePayload } from "./ChannelHistory.js"
import type { MessageTooLarge, Payload, ReplyStatus } from "./protocol/Message.js"

/**
 * The URI a client connected to, as Phoenix's `connect_info[:uri]`: the
 * scheme of the server's connection, the host and port of the `Host` header
 * (or the scheme's default port), the path and the query string (without `?`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Uri {
  readonly scheme: "http" | "https"
  readonly host: string
  readonly port: number
  readonly path: string
  readonly query: string
}

/**
 * The client's end of the TCP connection, as Phoenix's `connect_info[:peer_data]`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Peer {
  readonly address: string
  /** 0 where the transport's server does not know it. */
  readonly port: number
}

/**
 * What a connection was opened with, as Phoenix's `connect_info`: the
 * transport, the connect parameters (the query string less `vsn`), the URI,
 * the peer, the auth token a client offered, and the request headers the
 * socket keeps (its `connectInfo` option: none by default). The same object
 * is given to `connect` and kept for the life of the connection, so nothing
 * else of the request is held by an open connection.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectInfo {
  readonly transport: "websocket" | "longpoll" | "test"
  readonly vsn: string
  readonly params: Readonly<Record<string, string>>
  readonly uri: Uri
  readonly peer: Option.Option<Peer>
  /** The headers the socket's `connectInfo` option keeps, by lower-case name. */
  readonly headers: Readonly<Record<string, string>>
  /** The token of the client's `authToken` option, decoded. */
  readonly authToken: Option.Option<string>
}

/**
 * The socket-level state of a connection, shared by all its channels.
 *
 * @since 0.1.0
 * @category models
 */
export interface SocketInfo {
  /** The id `connect` gave the socket, if any (see `ChannelBroadcaster.disconnect`). */
  readonly id: Option.Option<string>
  readonly connectInfo: ConnectInfo
  /** State set by `connect` or by any channel of the socket. */
  readonly assigns: Readonly<Record<string, unknown>>
  readonly assign: (key: string, value: unknown) => Effect.Effect<void>
}

/**
 * How a join ends: allowed with a response, or refused with a reason.
 *
 * @since 0.1.0
 * @category models
 */
export type JoinResult =
  | { readonly _tag: "Allow"; readonly response: Payload }
  | { readonly _tag: "Refuse"; readonly reason: Payload }

/**
 * Why a channel ended, as the `leave` hook is told.
 *
 * - `left`: the client sent `phx_leave`.
 * - `closed`: the server left the channel (`conn.leave`).
 * - `duplicate`: the client joined the topic again on the same socket.
 * - `crashed`: a hook failed; the client received `phx_error`.
 * - `disconnected`: the connection ended.
 * - `resync`: the topic's history skipped a position or changed its epoch
 *   under the channel; the client received `phx_error`, and rejoins to
 *   recover (see `ChannelHistory`).
 *
 * @since 0.1.0
 * @category models
 */
export type LeaveReason = "left" | "closed" | "duplicate" | "crashed" | "disconnected" | "resync"

/**
 * @since 0.1.0
 * @category models
 */
export interface ChannelConn {
  readonly topic: string
  /**
   * The join's ref: its `join_ref`, or its `ref` when the client sent no
   * `join_ref` (V1 clients may not). On the wire the channel's messages
   * carry the `join_ref` the client sent, `null` if none, as Phoenix sends
   * them (the `ref` of a V1 client's `phx_close` is then `null`).
   */
  readonly joinRef: string
  readonly socket: SocketInfo
  /**
   * The channel's scope: closed when the channel ends, however it ends. What
   * a handler attaches to it (a presence, a subscription) ends with the channel.
   */
  readonly scope: Scope.Scope
  /** Allows the join; `response` (default `{}`) is the join reply. */
  readonly allowJoin: (response?: Payload) => JoinResult
  /** Refuses the join; the client gets an error reply with `reason`. */
  readonly refuseJoin: (reason: Payload) => JoinResult
  /**
   * Replies to an event that carried a ref (a push from the client). This and
   * the three below fail with `MessageTooLarge`, sending nothing, when the
   * encoded message is over the socket's `maxOutboundSize`.
   */
  readonly reply: (event: ChannelEvent, status: ReplyStatus, response?: Payload) => Effect.Effect<void, MessageTooLarge>
  /** Sends an event to this client only. */
  readonly push: (event: string, payload?: Payload) => Effect.Effect<void, MessageTooLarge>
  /** Sends an event to every subscriber of the topic, this client included. */
  readonly broadcast: (event: string, payload?: Payload) => Effect.Effect<void, MessageTooLarge | UnrecoverablePayload>
  /** Sends an event to every subscriber of the topic but this client. */
  readonly broadcastFrom: (event: string, payload?: Payload) => Effect.Effect<void, MessageTooLarge | UnrecoverablePayload>
  /**
   * Leaves the channel from the server side: `leave` runs, then the client
   * receives `phx_close`. Nothing before the join reply is out (in `join`,
   * refuse the join instead).
   */
  readonly leave: Effect.Effect<void>
  /**
   * Runs an effect in a fiber of the channel, with the hook's context: the
   * fiber is interrupted when the channel ends (its scope closes), however
   * it ends. What it sends before the join reply is out is sent right after
   * it. A failure (not an interruption) of the fiber is logged and, once
   * the channel is joined, crashes it: the client receives `phx_error`, as
   * when a `handle_info` of Phoenix raises.
   */
  readonly fork: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<Fiber.RuntimeFiber<A, E>, never, R>
  /**
   * Subscribes the channel to another topic, for as long as the channel
   * lives (Phoenix's `Endpoint.subscribe`): what is broadcast to `topic`
   * (by a channel, or from anywhere with `ChannelBroadcaster.broadcast`) is
   * pushed to this client on the channel's own topic, with the broadcast's
   * event and payload. Each call adds a subscription. Such a push is
   * encoded for this client alone, not once for all subscribers.
   */
  readonly subscribe: (topic: string) => Effect.Effect<void>
  /** State of this channel only. */
  readonly assigns: Effect.Effect<Readonly<Record<string, unknown>>>
  readonly assign: (key: string, value: unknown) => Effect.Effect<void>
}
