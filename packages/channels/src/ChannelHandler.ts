/**
 * A `ChannelHandler` decides what a socket does: who may connect, who may join
 * which topic, and what happens with the events clients push.
 *
 * ```ts
 * const Lobby = ChannelHandler.layer({
 *   join: (conn, event) =>
 *     Effect.succeed(event.topic === "rooms:lobby"
 *       ? conn.allowJoin()
 *       : conn.refuseJoin({ reason: "unauthorized" })),
 *   incoming: (conn, event) => conn.broadcast(event.event, event.payload)
 * })
 * ```
 *
 * The hooks, all returning `Effect`s that may need the services of the
 * handler's layer:
 *
 * - `connect(info)`: runs before the transport is opened. Fail with
 *   {@link ConnectRefused} to refuse (HTTP 403, or the status and body it
 *   carries); succeed with a socket id and
 *   socket assigns. Default: allow, no id.
 * - `join(conn, event)`: required, so that access control is always explicit.
 *   Return `conn.allowJoin(response)` or `conn.refuseJoin(reason)`. A failing
 *   join is answered `{"reason": "join crashed"}`.
 * - `incoming(conn, event)`: every event a joined client pushes. A failure
 *   crashes this channel only: the client receives `phx_error` and rejoins,
 *   the socket and its other channels go on. An `InvalidPayload` failure is
 *   answered with an error reply instead. Default: nothing.
 * - `leave(conn, reason)`: runs exactly once for every allowed join, whatever
 *   ends it (leave, crash, duplicate join, connection close). Default: nothing.
 *   What it sends goes out as long as the transport is open: its pushes reach
 *   the client before the `phx_leave` reply and `phx_close` (as Phoenix's
 *   `terminate` pushes do), its broadcasts (`broadcast`, `broadcastFrom`)
 *   reach the topic's other subscribers. Once the transport has closed (the
 *   client went away, a TCP reset, a heartbeat timeout) its pushes have
 *   nowhere to go and are dropped, while its broadcasts still reach the
 *   topic: a "user_left" broadcast from `leave` always reaches the others.
 *   The leaving client itself is unsubscribed before `leave` runs and gets
 *   none of the topic's broadcasts, its own included.
 * - `intercept`: `{ events, handleOut }`, Phoenix's `intercept` and
 *   `handle_out`: the topic's broadcasts of these events reach this client
 *   only through `handleOut(conn, event, payload)`, which returns
 *   `Option.some(payload)` to push (maybe changed) to this client, or
 *   `Option.none()` to drop it. It runs in the channel's fiber, in order with
 *   the client's events. The cost: an intercepted broadcast is encoded once
 *   per subscriber instead of once per serializer, and each subscriber runs
 *   an effect for it; the broadcasts of other events keep the fastlane (and
 *   may overtake intercepted ones queued behind the channel's events).
 * - `disconnect(socket)`: runs exactly once when a connection ends, however it
 *   ends, after the `leave` of each of its channels. Default: nothing.
 *
 * Several handlers mounted by topic pattern form a `ChannelRouter`, which
 * is a `ChannelHandler` too.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Option from "effect/Option"
import type { ChannelConn, ConnectInfo, JoinResult, LeaveReason, SocketInfo } from "./ChannelConn.js"
import type { ChannelEvent } from "./ChannelEvent.js"
import type { Payload } from "./protocol/Message.js"

/**
 * A refused connection, as Phoenix's socket `error_handler` answers it: the
 * client gets the HTTP `status` (default 403) with `body` (default empty,
 * sent as `text/plain`), on every transport: WebSocket upgrades are answered
 * with that response, long-poll reports the status in its JSON. A status
 * that is not 400 to 599 is answered 500, with an error log.
 *
 * ```ts
 * connect: (info) =>
 *   Effect.gen(function*() {
 *     const wait = yield* secondsUntilAllowed(info.peer) // your rate limit
 *     if (wait > 0) {
 *       return yield* new ConnectRefused({ reason: "rate limited", status: 429, body: `retry after ${wait} s` })
 *     }
 *     return {}
 *   })
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectRefused extends Data.TaggedError("ConnectRefused")<{
  /** Why, for logs and tests; not sent to the client. */
  readonly reason: string
  readonly status?: number | undefined
  readonly body?: string | undefined
}> {}

/**
 * @since 0.1.0
 * @category refinements
 */
export const isConnectRefused = (u: unknown): u is ConnectRefused => u instanceof ConnectRefused

/**
 * What an allowed connection starts with.
 *
 * @since 0.1.0
 * @category models
 */
export interface Connected {
  readonly id?: string | undefined
  readonly assigns?: Readonly<Record<string, unknown>> | undefined
}

/**
 * Broadcast events a channel intercepts, and what it does with each for its
 * own client (Phoenix's `intercept` and `handle_out`): `Option.some(payload)`
 * pushes that payload to the client, `Option.none()` drops the broadcast for
 * it. A failing `handleOut` crashes the channel, as a failing `incoming` does.
 *
 * ```ts
 * const intercept: ChannelHandler.Intercept = {
 *   events: ["new:msg"],
 *   handleOut: (conn, _event, payload) =>
 *     Effect.map(conn.assigns, (assigns) =>
 *       isBlocked(assigns, payload) ? Option.none() : Option.some(payload))
 * }
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export interface Intercept<R = never> {
  readonly events: ReadonlyArray<string>
  readonly handleOut: (conn: ChannelConn, event: string, payload: Payload) => Effect.Effect<Option.Option<Payload>, unknown, R>
}

/**
 * The hooks of the channels of one topic (pattern).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChannelHooks<R = never> {
  readonly join: (conn: ChannelConn, event: ChannelEvent) => Effect.Effect<JoinResult, unknown, R>
  readonly incoming?: ((conn: ChannelConn, event: ChannelEvent) => Effect.Effect<void, unknown, R>) | undefined
  /**
   * Runs once for every allowed join, however the channel ends. While the
   * transport is open, its pushes reach the client before the `phx_leave`
   * reply and `phx_close`; its broadcasts reach the topic's other
   * subscribers, after the transport has closed too. See the module's docs.
   */
  readonly leave?: ((conn: ChannelConn, reason: LeaveReason) => Effect.Effect<void, unknown, R>) | undefined
  /** Broadcast events this channel handles per recipient (Phoenix's `intercept`/`handle_out`). */
  readonly intercept?: Intercept<R> | undefined
}

/**
 * The hooks of a socket.
 *
 * @since 0.1.0
 * @category models
 */
export interface SocketHooks<R = never> {
  readonly connect?: ((info: ConnectInfo) => Effect.Effect<Connected, ConnectRefused, R>) | undefined
  readonly disconnect?: ((socket: SocketInfo) => Effect.Effect<void, unknown, R>) | undefined
}

/**
 * All hooks of a handler that serves every topic itself.
 *
 * @since 0.1.0
 * @category models
 */
export interface Hooks<R = never> extends ChannelHooks<R>, SocketHooks<R> {}

/**
 * The channel hooks of a topic, with their context already provided.
 *
 * @since 0.1.0
 * @category models
 */
export interface Channel {
  /** The topic pattern these hooks serve (`ChannelRouter`'s key; a plain handler's is `*`), a label of the metrics. */
  readonly pattern?: string | undefined
  readonly join: (conn: ChannelConn, event: ChannelEvent) => Effect.Effect<JoinResult, unknown>
  readonly leave: (conn: ChannelConn, reason: LeaveReason) => Effect.Effect<void, unknown>
  /** The broadcast events that go through `handleOut`, if any. */
  readonly intercepts: ReadonlySet<string> | undefined
  /**
   * Runs `loop`, which handles events with `incoming` and intercepted
   * broadcasts with `handleOut`, with the hooks' services provided once
   * around it rather than once per event.
   */
  readonly handleEvents: <A>(loop: (incoming: Incoming, handleOut: HandleOut) => Effect.Effect<A>) => Effect.Effect<A>
}

/**
 * The `incoming` hook, inside {@link Channel.handleEvents}.
 *
 * @since 0.1.0
 * @category models
 */
export type Incoming = (conn: ChannelConn, event: ChannelEvent) => Effect.Effect<void, unknown>

/**
 * The `handleOut` hook of an {@link Intercept}, inside {@link Channel.handleEvents}.
 *
 * @since 0.2.0
 * @category models
 */
export type HandleOut = (conn: ChannelConn, event: string, payload: Payload) => Effect.Effect<Option.Option<Payload>, unknown>

/**
 * The service a socket serves. Build it with {@link make} or `ChannelRouter`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Service {
  readonly connect: (info: ConnectInfo) => Effect.Effect<Connected, ConnectRefused>
  readonly disconnect: (socket: SocketInfo) => Effect.Effect<void, unknown>
  /** The channel hooks for a topic, or `undefined` for an unmatched topic. */
  readonly channel: (topic: string) => Channel | undefined
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ChannelHandler extends Context.Tag("@effect-channels/ChannelHandler")<ChannelHandler, Service>() {}

const ignore: Incoming = () => Effect.void
const passOut: HandleOut = (_conn, _event, payload) => Effect.succeedSome(payload)

/** @internal */
export const provideHooks = <R>(
  hooks: ChannelHooks<R>,
  context: Context.Context<R>,
  pattern = "*"
): Channel => ({
  pattern,
  join: (conn, event) => Effect.provide(hooks.join(conn, event), context),
  intercepts: hooks.intercept && hooks.intercept.events.length > 0 ? new Set(hooks.intercept.events) : undefined,
  // The hooks' requirements are met by the context provided around the loop.
  handleEvents: (loop) => {
    const incoming = (hooks.incoming ?? ignore) as unknown as Incoming
    const handleOut = (hooks.intercept?.handleOut ?? passOut) as unknown as HandleOut
    return hooks.incoming || hooks.intercept ? Effect.provide(loop(incoming, handleOut), context) : loop(incoming, handleOut)
  },
  leave: hooks.leave
    ? (conn, reason) => Effect.provide(hooks.leave!(conn, reason), context)
    : () => Effect.void
})

/** @internal */
export const provideSocketHooks = <R>(
  hooks: SocketHooks<R>,
  context: Context.Context<R>
): Pick<Service, "connect" | "disconnect"> => ({
  connect: hooks.connect
    ? (info) => Effect.provide(hooks.connect!(info), context)
    : () => Effect.succeed({}),
  disconnect: hooks.disconnect
    ? (socket) => Effect.provide(hooks.disconnect!(socket), context)
    : () => Effect.void
})

/**
 * A handler that serves every topic with the same hooks. Its hooks run with
 * the context this effect was run in.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R>(hooks: Hooks<R>): Effect.Effect<Service, never, R> =>
  Effect.map(Effect.context<R>(), (context) => {
    const channel = provideHooks(hooks, context)
    return { ...provideSocketHooks(hooks, context), channel: () => channel }
  })

/**
 * Provides a handler that serves every topic with the same hooks.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <R>(hooks: Hooks<R>): Layer.Layer<ChannelHandler, never, R> =>
  Layer.effect(ChannelHandler, make(hooks))
