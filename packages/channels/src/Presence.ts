/**
 * Presence: who is in a topic, kept so that the `Presence` class of the
 * `phoenix` JS client shows the same list on every client.
 *
 * ```ts
 * const Lobby = ChannelHandler.layer({
 *   join: (conn, event) =>
 *     Effect.gen(function*() {
 *       const presence = yield* Presence.Presence
 *       yield* presence.track(conn, conn.topic, userOf(event), { online_at: Date.now() })
 *       return conn.allowJoin()
 *     })
 * }).pipe(Layer.provide(Presence.layer()))
 * ```
 *
 * The data model is Phoenix's. The state of a topic maps each key (a user
 * id, say) to its `metas`, one per tracked channel, each with a unique
 * `phx_ref`: one user in two tabs is one key with two metas. An update
 * replaces a meta by a new one whose `phx_ref_prev` is the old ref, and diffs
 * as a join plus a leave.
 *
 * - `track` pushes `presence_state` (the whole state of the topic, the new
 *   entry included) to the tracked client; called during `join`, the push
 *   follows the join reply. `pushState` does it for a client that only watches.
 * - Every change reaches the topic as `presence_diff` `{joins, leaves}`.
 * - The state and the diffs agree: a channel is subscribed to its topic
 *   before `join` runs, so every diff published after the state was read
 *   reaches it, after the state. A diff that repeats what the state holds
 *   (the joiner's own join, say) changes nothing: clients merge by `phx_ref`.
 * - An entry is untracked when its channel ends, however it ends (leave,
 *   crash, duplicate join, close frame, TCP reset, heartbeat timeout,
 *   server-side disconnect): the untrack is a finalizer of `conn.scope`, not a
 *   hook to remember.
 *
 * Diffs are batched. The first change of a topic opens a window of
 * `batchWindow` (default 1 second, near the 1.5 s at which Phoenix's
 * trackers exchange deltas); the changes made until it closes go out as one
 * `presence_diff`. The cost is latency: a change reaches the other clients up
 * to one window late (a lone change, exactly one window). The gain: a topic
 * sends at most one diff per window, whatever the number of changes, so a
 * storm of N joins into a topic costs each member one message per window
 * instead of N, and the server N deliveries per window instead of N². A topic
 * has a fiber only while changes wait for their window.
 *
 * Presence is local to this process: {@link layer} keeps the entries in
 * memory. They sit behind the {@link Store} interface, which a store
 * replicated between processes implements ({@link layerWithStore}); its
 * `changes` then carry the changes of every process.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { Broker } from "./Broker.js"
import type { ChannelConn } from "./ChannelConn.js"
import * as internal from "./internal/presence.js"
import * as localStore from "./internal/localPresenceStore.js"
import type { MessageTooLarge } from "./protocol/Message.js"

/**
 * What a handler tracks about a presence: a JSON object.
 *
 * @since 0.1.0
 * @category models
 */
export type Meta = Readonly<Record<string, unknown>>

/**
 * A meta as clients see it, with its unique `phx_ref` (and, after an update,
 * the ref it replaced).
 *
 * @since 0.1.0
 * @category models
 */
export type TrackedMeta = Meta & { readonly phx_ref: string; readonly phx_ref_prev?: string }

/**
 * The presences of a topic: `{ key: { metas: [...] } }`, the payload of
 * `presence_state`.
 *
 * @since 0.1.0
 * @category models
 */
export type State = Readonly<Record<string, { readonly metas: ReadonlyArray<TrackedMeta> }>>

/**
 * The changes of a topic, as sent in `presence_diff`. Clients apply the
 * joins, then the leaves.
 *
 * @since 0.1.0
 * @category models
 */
export interface Diff {
  readonly joins: State
  readonly leaves: State
}

/**
 * One change of a store: an entry joined or left.
 *
 * @since 0.1.0
 * @category models
 */
export interface Change {
  readonly _tag: "Join" | "Leave"
  readonly topic: string
  readonly key: string
  readonly meta: TrackedMeta
}

/**
 * An `update` of an entry that the channel does not track.
 *
 * @since 0.1.0
 * @category errors
 */
export class NotTracked extends Data.TaggedError("NotTracked")<{
  readonly topic: string
  readonly key: string
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Tracks the channel under `key` in `topic` (usually `conn.topic`) with
   * `meta`, until the channel ends or `untrack`; when `topic` is the
   * channel's, pushes `presence_state` to its client. Tracking a key the
   * channel already tracks in that topic updates it. Returns the `phx_ref`.
   */
  readonly track: (conn: ChannelConn, topic: string, key: string, meta: Meta) => Effect.Effect<string, MessageTooLarge>
  /**
   * Replaces the meta of the channel's entry (or maps it, given a function);
   * diffs as a leave of the old meta and a join of the new one, whose
   * `phx_ref_prev` is the old ref. Returns the new `phx_ref`.
   */
  readonly update: (
    conn: ChannelConn,
    topic: string,
    key: string,
    meta: Meta | ((current: Meta) => Meta)
  ) => Effect.Effect<string, NotTracked>
  /** Removes the channel's entry before the channel ends; nothing if there is none. */
  readonly untrack: (conn: ChannelConn, topic: string, key: string) => Effect.Effect<void>
  /** The presences of a topic. */
  readonly list: (topic: string) => Effect.Effect<State>
  /**
   * Pushes `presence_state` (the state of the channel's topic) to a client
   * that is not tracked itself, so that its `Presence` sees the others.
   * `track` and `pushState` fail with `MessageTooLarge` when the state is
   * over the socket's `maxOutboundSize`.
   */
  readonly pushState: (conn: ChannelConn) => Effect.Effect<void, MessageTooLarge>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Presence extends Context.Tag("@effect-channels/Presence")<Presence, Service>() {}

/**
 * Where the entries are kept. The presence service keeps which channel owns
 * which entry, makes the refs, and turns `changes` into diffs; a store only
 * keeps entries and reports its changes, in the order it makes them.
 *
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /** Adds an entry. */
  readonly track: (topic: string, key: string, meta: TrackedMeta) => Effect.Effect<void>
  /** Replaces the entry `ref` of `key` by `meta`: a leave, then a join. */
  readonly update: (topic: string, key: string, ref: string, meta: TrackedMeta) => Effect.Effect<void>
  /** Removes the entry `ref` of `key`, if it is there. */
  readonly untrack: (topic: string, key: string, ref: string) => Effect.Effect<void>
  /** The entries of a topic, grouped by key: a copy that later changes leave alone. */
  readonly list: (topic: string) => Effect.Effect<State>
  /** Subscribes, for the life of the scope, to every change made from now on. */
  readonly changes: Effect.Effect<Queue.Dequeue<Change>, never, Scope.Scope>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class PresenceStore extends Context.Tag("@effect-channels/PresenceStore")<PresenceStore, Store>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How long the changes of a topic are gathered into one `presence_diff`,
   * from the first; default 1 second. Longer: fewer, larger diffs, later.
   */
  readonly batchWindow?: Duration.DurationInput | undefined
}

/**
 * A store in this process's memory.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeLocalStore: Effect.Effect<Store, never, Scope.Scope> = localStore.make

/**
 * @since 0.1.0
 * @category layers
 */
export const layerLocalStore: Layer.Layer<PresenceStore> = Layer.scoped(PresenceStore, makeLocalStore)

/**
 * The presence service over the `PresenceStore`, its diffs published through
 * the `Broker`. Its batching fibers live in the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<Service, never, Broker | PresenceStore | Scope.Scope> =>
  internal.make(Duration.decode(options.batchWindow ?? "1 second"))

/**
 * Presence over a store of your own, replicated between processes say.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithStore = (options: Options = {}): Layer.Layer<Presence, never, Broker | PresenceStore> =>
  Layer.scoped(Presence, make(options))

/**
 * Presence kept in this process.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Presence, never, Broker> =>
  layerWithStore(options).pipe(Layer.provide(layerLocalStore))
