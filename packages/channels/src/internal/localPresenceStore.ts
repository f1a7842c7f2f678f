import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import type { Change, State, Store, TrackedMeta } from "../Presence.js"

/**
 * Entries by topic and key, in memory. Each operation changes the entries and
 * offers its changes in one step, so the changes come out in the order the
 * entries changed. A topic or key left empty is deleted.
 *
 * @internal
 */
export const make = Effect.gen(function*() {
  const topics = new Map<string, Map<string, Array<TrackedMeta>>>()
  const changes = yield* Effect.acquireRelease(PubSub.unbounded<Change>(), PubSub.shutdown)

  const add = (topic: string, key: string, meta: TrackedMeta) => {
    let keys = topics.get(topic)
    if (keys === undefined) topics.set(topic, keys = new Map())
    const metas = keys.get(key)
    if (metas === undefined) keys.set(key, [meta])
    else metas.push(meta)
    changes.unsafeOffer({ _tag: "Join", topic, key, meta })
  }

  const remove = (topic: string, key: string, ref: string) => {
    const keys = topics.get(topic)
    const metas = keys?.get(key)
    const index = metas === undefined ? -1 : metas.findIndex((meta) => meta.phx_ref === ref)
    if (index === -1) return false
    const [meta] = metas!.splice(index, 1)
    if (metas!.length === 0) keys!.delete(key)
    if (keys!.size === 0) topics.delete(topic)
    changes.unsafeOffer({ _tag: "Leave", topic, key, meta: meta! })
    return true
  }

  const store: Store = {
    track: (topic, key, meta) => Effect.sync(() => add(topic, key, meta)),
    update: (topic, key, ref, meta) =>
      Effect.sync(() => {
        if (remove(topic, key, ref)) add(topic, key, meta)
      }),
    untrack: (topic, key, ref) => Effect.sync(() => void remove(topic, key, ref)),
    list: (topic) =>
      Effect.sync(() => {
        // No prototype: a key such as "__proto__" is a key like any other.
        const state: Record<string, { metas: ReadonlyArray<TrackedMeta> }> = Object.create(null)
        for (const [key, metas] of topics.get(topic) ?? []) state[key] = { metas: [...metas] }
        return state as State
      }),
    changes: PubSub.subscribe(changes)
  }
  return store
})
