import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Scope from "effect/Scope"
import type { ChannelConn } from "../ChannelConn.js"
import type { Diff, Meta, PresenceStore, Service, TrackedMeta } from "../Presence.js"
import { NotTracked } from "../Presence.js"

/** @internal */
export const localStore = (): PresenceStore => {
  const topics = new Map<string, Map<string, Array<TrackedMeta>>>()
  return {
    join: (topic, key, meta) =>
      Effect.sync(() => {
        let keys = topics.get(topic)
        if (keys === undefined) topics.set(topic, keys = new Map())
        const metas = keys.get(key)
        if (metas === undefined) keys.set(key, [meta])
        else metas.push(meta)
      }),
    leave: (topic, key, ref) =>
      Effect.sync(() => {
        const keys = topics.get(topic)
        const metas = keys?.get(key)
        const index = metas?.findIndex((meta) => meta.phx_ref === ref) ?? -1
        if (keys === undefined || metas === undefined || index === -1) return undefined
        const [left] = metas.splice(index, 1)
        if (metas.length === 0) keys.delete(key)
        if (keys.size === 0) topics.delete(topic)
        return left
      }),
    list: (topic) =>
      Effect.sync(() => {
        const state: Record<string, { metas: ReadonlyArray<TrackedMeta> }> = {}
        for (const [key, metas] of topics.get(topic) ?? []) state[key] = { metas: [...metas] }
        return state
      })
  }
}

type Changes = { joins: Record<string, { metas: Array<TrackedMeta> }>; leaves: Record<string, { metas: Array<TrackedMeta> }> }

const node = Math.random().toString(36).slice(2, 8)
let counter = 0
const nextRef = () => `${node}${(++counter).toString(36)}`

/** @internal */
export const make = (
  store: PresenceStore,
  window: Duration.Duration,
  publish: (topic: string, diff: Diff) => Effect.Effect<void>
): Effect.Effect<Service, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Changes not yet sent, by topic; one fiber sends them a window after the first.
    const pending = new Map<string, Changes>()
    let wake: (() => void) | undefined

    const record = (topic: string, kind: keyof Changes, key: string, meta: TrackedMeta) => {
      let changes = pending.get(topic)
      if (changes === undefined) pending.set(topic, changes = { joins: {}, leaves: {} })
      const entry = changes[kind][key] ??= { metas: [] }
      entry.metas.push(meta)
      wake?.()
    }

    yield* Effect.forkScoped(Effect.gen(function*() {
      while (true) {
        if (pending.size === 0) {
          yield* Effect.async<void>((resume) => {
            wake = () => {
              wake = undefined
              resume(Effect.void)
            }
            return Effect.sync(() => {
              wake = undefined
            })
          })
        }
        yield* Effect.sleep(window)
        const batch = [...pending]
        pending.clear()
        yield* Effect.forEach(batch, ([topic, diff]) => publish(topic, diff), { discard: true })
      }
    }))

    // The ref each connection's entries have now, by topic and key.
    const owned = new WeakMap<ChannelConn, Map<string, string>>()
    const slot = (topic: string, key: string) => `${topic}\u0000${key}`

    const leave = (topic: string, key: string, ref: string) =>
      Effect.flatMap(store.leave(topic, key, ref), (left) =>
        Effect.sync(() => {
          if (left !== undefined) record(topic, "leaves", key, left)
        }))

    const untrack: Service["untrack"] = (conn, topic, key) =>
      Effect.suspend(() => {
        const entries = owned.get(conn)
        const ref = entries?.get(slot(topic, key))
        if (ref === undefined) return Effect.void
        entries!.delete(slot(topic, key))
        return leave(topic, key, ref)
      })

    const join = (conn: ChannelConn, topic: string, key: string, meta: TrackedMeta) =>
      Effect.zipRight(
        store.join(topic, key, meta),
        Effect.sync(() => {
          record(topic, "joins", key, meta)
          owned.get(conn)!.set(slot(topic, key), meta.phx_ref)
        })
      )

    const update: Service["update"] = (conn, topic, key, meta: Meta) =>
      Effect.suspend(() => {
        const previous = owned.get(conn)?.get(slot(topic, key))
        if (previous === undefined) return Effect.fail(new NotTracked({ topic, key }))
        const ref = nextRef()
        return leave(topic, key, previous).pipe(
          Effect.zipRight(join(conn, topic, key, { ...meta, phx_ref: ref, phx_ref_prev: previous })),
          Effect.as(ref)
        )
      })

    const track: Service["track"] = (conn, topic, key, meta) =>
      Effect.gen(function*() {
        let entries = owned.get(conn)
        if (entries === undefined) owned.set(conn, entries = new Map())
        if (entries.has(slot(topic, key))) return yield* Effect.orDie(update(conn, topic, key, meta))
        const ref = nextRef()
        yield* join(conn, topic, key, { ...meta, phx_ref: ref })
        yield* Scope.addFinalizer(conn.scope, untrack(conn, topic, key))
        if (topic === conn.topic) yield* pushState(conn)
        return ref
      })

    const pushState: Service["pushState"] = (conn) =>
      Effect.flatMap(store.list(conn.topic), (state) => conn.push("presence_state", state))

    return { track, update, untrack, pushState, list: store.list } satisfies Service
  })
