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
 *   {@link ConnectRefused} to refuse (HTTP 403); succeed with a socket id and
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
import type { ChannelConn, ConnectInfo, JoinResult, LeaveReason, SocketInfo } from "./ChannelConn.js"
import type { ChannelEvent } from "./ChannelEvent.js"

/**
 * A refused connection: the client gets HTTP 403.
 *
 * @since 0.1.0
 * @category errors
 */
export class ConnectRefused extends Data.TaggedError("ConnectRefused")<{
  readonly reason: string
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
 * The hooks of the channels of one topic (pattern).
 *
 * @since 0.1.0
 * @category models
 */
export interface ChannelHooks<R = never> {
  readonly join: (conn: ChannelConn, event: ChannelEvent) => Effect.Effect<JoinResult, unknown, R>
  readonly incoming?: ((conn: ChannelConn, event: ChannelEvent) => Effect.Effect<void, unknown, R>) | undefined
  readonly leave?: ((conn: ChannelConn, reason: LeaveReason) => Effect.Effect<void, unknown, R>) | undefined
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
  /**
   * Runs `loop`, which handles events with `incoming`, with the hooks'
   * services provided once around it rather than once per event.
   */
  readonly handleEvents: <A>(loop: (incoming: Incoming) => Effect.Effect<A>) => Effect.Effect<A>
}

/**
 * The `incoming` hook, inside {@link Channel.handleEvents}.
 *
 * @since 0.1.0
 * @category models
 */
export type Incoming = (conn: ChannelConn, event: ChannelEvent) => Effect.Effect<void, unknown>

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

/** @internal */
export const provideHooks = <R>(
  hooks: ChannelHooks<R>,
  context: Context.Context<R>,
  pattern = "*"
): Channel => ({
  pattern,
  join: (conn, event) => Effect.provide(hooks.join(conn, event), context),
  // The hook's requirements are met by the context provided around the loop.
  handleEvents: (loop) =>
    hooks.incoming
      ? Effect.provide(loop(hooks.incoming as unknown as Incoming), context)
      : loop(() => Effect.void),
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
