/**
 * Presence: who is in a topic, as the `Presence` class of the `phoenix` JS
 * client expects it.
 *
 * ```ts
 * const Lobby = ChannelHandler.layer({
 *   join: (conn, event) =>
 *     Effect.gen(function*() {
 *       const presence = yield* Presence.Presence
 *       yield* presence.track(conn, conn.topic, "ada", { online_at: Date.now() })
 *       return conn.allowJoin()
 *     })
 * }).pipe(Layer.provide(Presence.layer()))
 * ```
 *
 * The data model is Phoenix's: the state of a topic maps each key to its
 * `metas`, one per tracked connection, each with a unique `phx_ref`; an
 * update replaces a meta by a new one whose `phx_ref_prev` is the old ref,
 * and diffs as a join plus a leave. One user in two tabs is one key with two
 * metas.
 *
 * - `track` pushes `presence_state` (the whole state of the topic) to the
 *   tracked client, after its join reply when called during `join`;
 *   `pushState` does it for a client that only watches.
 * - Every change reaches the topic as `presence_diff` `{joins, leaves}`.
 * - A tracked entry is untracked when its channel ends, however it ends
 *   (leave, crash, close frame, TCP reset, heartbeat timeout, server-side
 *   disconnect): the untrack is a finalizer of the channel's scope.
 *
 * Diffs are batched: the changes of a topic during `batchWindow` (default
 * 1 second; Phoenix's trackers exchange deltas every 1.5 s) go out as one
 * `presence_diff`. The cost is latency: a change reaches the other clients
 * up to one window late. The gain: a storm of N joins costs each client one
 * diff per window instead of N messages, N² deliveries becoming N per window.
 *
 * The state is kept by a {@link PresenceStore}; {@link layer} keeps it in
 * this process. A store replicated between processes implements the same
 * interface.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import { Broker, Envelope } from "./Broker.js"
import type { ChannelConn } from "./ChannelConn.js"
import * as internal from "./internal/presence.js"
import * as Msg from "./protocol/Message.js"

/**
 * What a handler tracks about a presence: a JSON object.
 *
 * @since 0.1.0
 * @category models
 */
export type Meta = Readonly<Record<string, unknown>>

/**
 * A meta as clients see it.
 *
 * @since 0.1.0
 * @category models
 */
export type TrackedMeta = Meta & { readonly phx_ref: string; readonly phx_ref_prev?: string }

/**
 * The presences of a topic: `{ key: { metas: [...] } }`.
 *
 * @since 0.1.0
 * @category models
 */
export type State = Readonly<Record<string, { readonly metas: ReadonlyArray<TrackedMeta> }>>

/**
 * A change of a topic's presences, as sent in `presence_diff`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Diff {
  readonly joins: State
  readonly leaves: State
}

/**
 * An update or untrack of an entry the connection does not track.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotTracked extends Data.TaggedError("NotTracked")<{
  readonly topic: string
  readonly key: string
}> {}

/**
 * Where presences are kept: what `list` answers. The service turns the
 * changes it makes into diffs.
 *
 * @since 0.1.0
 * @category models
 */
export interface PresenceStore {
  readonly join: (topic: string, key: string, meta: TrackedMeta) => Effect.Effect<void>
  readonly leave: (topic: string, key: string, ref: string) => Effect.Effect<TrackedMeta | undefined>
  readonly list: (topic: string) => Effect.Effect<State>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Tracks the connection under `key` in `topic` (usually `conn.topic`) with
   * `meta`, until the channel ends; pushes `presence_state` to the client.
   * Returns the entry's `phx_ref`.
   */
  readonly track: (conn: ChannelConn, topic: string, key: string, meta: Meta) => Effect.Effect<string>
  /** Replaces the meta of the connection's entry; returns the new `phx_ref`. */
  readonly update: (conn: ChannelConn, topic: string, key: string, meta: Meta) => Effect.Effect<string, NotTracked>
  /**
   * Pushes `presence_state` (the state of the channel's topic) to a client
   * that is not tracked itself, so that its `Presence` sees the others.
   */
  readonly pushState: (conn: ChannelConn) => Effect.Effect<void>
  /** Removes the connection's entry before its channel ends. */
  readonly untrack: (conn: ChannelConn, topic: string, key: string) => Effect.Effect<void>
  /** The presences of a topic. */
  readonly list: (topic: string) => Effect.Effect<State>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Presence extends Context.Tag("@effect-channels/Presence")<Presence, Service>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** How long changes are gathered into one `presence_diff`; default 1 second. */
  readonly batchWindow?: Duration.DurationInput | undefined
}

/**
 * Presence kept in this process, diffs published through the `Broker`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Broker | Scope.Scope> =>
  Effect.gen(function*() {
    const broker = yield* Broker
    return yield* internal.make(
      internal.localStore(),
      Duration.decode(options.batchWindow ?? "1 second"),
      (topic, diff) => broker.publish(new Envelope(Msg.broadcast(topic, "presence_diff", diff)))
    )
  })

/**
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Presence, never, Broker> =>
  Layer.scoped(Presence, make(options))
