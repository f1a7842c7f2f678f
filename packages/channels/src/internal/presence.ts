import * as Chunk from "effect/Chunk"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as FiberSet from "effect/FiberSet"
import * as Queue from "effect/Queue"
import * as Scope from "effect/Scope"
import { Broker, Envelope } from "../Broker.js"
import type { ChannelConn } from "../ChannelConn.js"
import type { Change, Meta, Service, TrackedMeta } from "../Presence.js"
import { NotTracked, PresenceStore } from "../Presence.js"
import * as Msg from "../protocol/Message.js"
import * as Telemetry from "./metrics.js"

const node = Math.random().toString(36).slice(2, 10)
let counter = 0
/** Unique in this process, and between processes but for a one in 2^41 chance. */
const nextRef = () => `${node}${(++counter).toString(36)}`

type Grouped = Record<string, { metas: Array<TrackedMeta> }>

/** The changes of a topic waiting for the end of their window, grouped as a diff. */
interface Pending {
  readonly joins: Grouped
  readonly leaves: Grouped
}

/** A topic whose batcher is running; `pending` is empty right after a flush. */
interface Batch {
  pending: Pending | undefined
}

/** An entry a channel owns. */
interface Entry {
  readonly topic: string
  readonly key: string
  meta: TrackedMeta
}

const userMeta = ({ phx_ref: _ref, phx_ref_prev: _prev, ...meta }: TrackedMeta): Meta => meta

/** @internal */
export const make = (window: Duration.Duration) =>
  Effect.gen(function*() {
    const store = yield* PresenceStore
    const { recorder } = yield* Telemetry.telemetry
    const counted = (count: number) => {
      if (recorder.enabled) Telemetry.presenceTracked(count)
    }
    const broker = yield* Broker
    const batches = new Map<string, Batch>()
    const runFork = yield* FiberSet.makeRuntime<never, void, never>()

    /**
     * A topic's batcher: waits a window, publishes what gathered, and goes
     * on while changes came meanwhile. It ends, in the same step as it finds
     * nothing pending, so a change never waits for a batcher that is gone.
     */
    const flush = (topic: string, batch: Batch): Effect.Effect<void> =>
      Effect.sleep(window).pipe(
        Effect.zipRight(Effect.suspend(() => {
          const diff = batch.pending!
          batch.pending = undefined
          return broker.publish(new Envelope(Msg.broadcast(topic, "presence_diff", diff)))
        })),
        Effect.catchAllCause((cause) => Effect.logError("presence_diff not published", cause)),
        Effect.zipRight(Effect.suspend(() => {
          if (batch.pending !== undefined) return flush(topic, batch)
          batches.delete(topic)
          return Effect.void
        }))
      )

    const record = (change: Change) => {
      let batch = batches.get(change.topic)
      const idle = batch === undefined
      if (batch === undefined) batches.set(change.topic, batch = { pending: undefined })
      // No prototype: a key such as "__proto__" is a key like any other.
      const pending = batch.pending ??= { joins: Object.create(null), leaves: Object.create(null) }
      const side = change._tag === "Join" ? pending.joins : pending.leaves
      ;(side[change.key] ??= { metas: [] }).metas.push(change.meta)
      if (idle) runFork(flush(change.topic, batch))
    }

    const changes = yield* store.changes
    yield* Effect.forkScoped(Effect.forever(Effect.map(
      Queue.takeBetween(changes, 1, Number.MAX_SAFE_INTEGER),
      (taken) => Chunk.forEach(taken, record)
    )))

    // What each channel tracks, by topic and key; entries go when the channel's scope closes.
    const owned = new WeakMap<ChannelConn, Map<string, Entry>>()
    const slot = (topic: string, key: string) => `${topic}\u0000${key}`

    const untrackAll = (conn: ChannelConn) =>
      Effect.suspend(() => {
        const entries = owned.get(conn)
        owned.delete(conn)
        if (entries !== undefined) counted(-entries.size)
        return entries === undefined ? Effect.void : Effect.forEach(
          entries.values(),
          (entry) => store.untrack(entry.topic, entry.key, entry.meta.phx_ref),
          { discard: true }
        )
      })

    const pushState: Service["pushState"] = (conn) =>
      Effect.flatMap(store.list(conn.topic), (state) => conn.push("presence_state", state))

    const update: Service["update"] = (conn, topic, key, meta) =>
      Effect.suspend(() => {
        const entry = owned.get(conn)?.get(slot(topic, key))
        if (entry === undefined) return Effect.fail(new NotTracked({ topic, key }))
        const previous = entry.meta.phx_ref
        const next = typeof meta === "function" ? meta(userMeta(entry.meta)) : meta
        entry.meta = { ...next, phx_ref: nextRef(), phx_ref_prev: previous }
        return Effect.as(store.update(topic, key, previous, entry.meta), entry.meta.phx_ref)
      }).pipe(Effect.uninterruptible)

    const track: Service["track"] = (conn, topic, key, meta) =>
      Effect.gen(function*() {
        let entries = owned.get(conn)
        const first = entries === undefined
        if (entries === undefined) owned.set(conn, entries = new Map())
        if (entries.has(slot(topic, key))) return yield* Effect.orDie(update(conn, topic, key, meta))
        const tracked: TrackedMeta = { ...meta, phx_ref: nextRef() }
        entries.set(slot(topic, key), { topic, key, meta: tracked })
        counted(1)
        yield* store.track(topic, key, tracked)
        // After the entry is in: on a scope already closed, the finalizer runs at once.
        if (first) yield* Scope.addFinalizer(conn.scope, untrackAll(conn))
        if (topic === conn.topic) yield* pushState(conn)
        return tracked.phx_ref
      }).pipe(Effect.uninterruptible)

    const untrack: Service["untrack"] = (conn, topic, key) =>
      Effect.suspend(() => {
        const entries = owned.get(conn)
        const entry = entries?.get(slot(topic, key))
        if (entry === undefined) return Effect.void
        entries!.delete(slot(topic, key))
        counted(-1)
        return store.untrack(topic, key, entry.meta.phx_ref)
      }).pipe(Effect.uninterruptible)

    return { track, update, untrack, list: store.list, pushState } satisfies Service
  })
