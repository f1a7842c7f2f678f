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
 * The handle and the socket info are objects with methods, one per channel
 * and per connection (an idle connection holds them for as long as it is
 * open): call them on the handle, `conn.push(...)`, not detached from it.
 *
 * @since 0.1.0
 */
import type * as Effect from "effect/Effect"
import type * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import type { ChannelEvent } from "./ChannelEvent.js"
import type { MessageTooLarge, Payload, ReplyStatus } from "./protocol/Message.js"

/**
 * What a connection was opened with: the transport, the connect parameters
 * (the query string less `vsn`), the request headers, the peer address and
 * the auth token a client offered.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConnectInfo {
  readonly transport: "websocket" | "longpoll" | "test"
  readonly vsn: string
  readonly params: Readonly<Record<string, string>>
  readonly headers: Readonly<Record<string, string | undefined>>
  readonly remoteAddress: Option.Option<string>
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
 *
 * @since 0.1.0
 * @category models
 */
export type LeaveReason = "left" | "closed" | "duplicate" | "crashed" | "disconnected"

/**
 * @since 0.1.0
 * @category models
 */
export interface ChannelConn {
  readonly topic: string
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
  readonly broadcast: (event: string, payload?: Payload) => Effect.Effect<void, MessageTooLarge>
  /** Sends an event to every subscriber of the topic but this client. */
  readonly broadcastFrom: (event: string, payload?: Payload) => Effect.Effect<void, MessageTooLarge>
  /** Leaves the channel from the server side: the client receives `phx_close`. */
  readonly leave: Effect.Effect<void>
  /** State of this channel only. */
  readonly assigns: Effect.Effect<Readonly<Record<string, unknown>>>
  readonly assign: (key: string, value: unknown) => Effect.Effect<void>
}
