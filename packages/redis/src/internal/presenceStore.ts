/**
 * A presence store replicated between nodes over Redis pub/sub, in the
 * manner of Phoenix's trackers: each node owns its entries and announces
 * their changes; every node keeps a copy of every node's entries, so that
 * `list` and `presence_state` read memory, never Redis. Redis keeps nothing:
 * a Redis restart loses no state, since each node re-announces its own.
 *
 * - Each change of this node's entries goes out as a numbered `delta`. A
 *   node's messages go through one connection, so Redis delivers them in the
 *   order they were sent: a receiver that sees a number skipped (or a
 *   heartbeat ahead of its last delta) lost something, and asks the origin
 *   for its whole `state`, which replaces its copy (the differences are the
 *   changes its clients get).
 * - A node unheard of for `downAfter` is down: its entries leave. Heartbeats
 *   go out every `heartbeatInterval`. Time is each receiver's own monotonic
 *   clock: the nodes' clocks need not agree.
 * - On (re)subscribing, a node sends its `state` with `ask`: every node
 *   answers with its own. That is how a new node learns the others, and how
 *   the nodes converge again after Redis comes back.
 * - While Redis is unreachable nothing is queued (the offline queues are
 *   off), and at most `maxInFlight` publishes wait for Redis's answer:
 *   announcements beyond fail at once and are counted; the next `state`
 *   covers them.
 *
 * @internal
 */
import type { Presence } from "@effect-channels/core"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as FiberSet from "effect/FiberSet"
import * as PubSub from "effect/PubSub"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"
import type { Resolved } from "./presenceConfig.js"
import * as Wire from "./presenceWire.js"

type Change = Presence.Change
type TrackedMeta = Presence.TrackedMeta

interface Entry {
  readonly topic: string
  readonly key: string
  readonly meta: TrackedMeta
}

/** What this node knows of another. */
interface Peer {
  /** The `seq` of the last delta or state applied. */
  seq: number
  /** Whether `entries` follow the peer's deltas; if not, a state is awaited and deltas are ignored. */
  synced: boolean
  lastSeen: number
  askedAt: number
  readonly entries: Map<string, Entry>
}

/** Publishes sent and not yet answered, past which announcements are dropped (and repaired later). */
const maxInFlight = 1000

/** How long to wait between reconnection attempts: quickly at first, then every second. */
const retryStrategy = (times: number) => Math.min(times * 100, 1000)

/** @internal */
export const make = (config: Resolved): Effect.Effect<Presence.Store, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { nodeId } = config
    const channel = `{${config.prefix}}:presence`
    const downAfter = Duration.toMillis(config.downAfter)
    const interval = Duration.toMillis(config.heartbeatInterval)
    const runFork = yield* FiberSet.makeRuntime<never, void, never>()
    const changes = yield* Effect.acquireRelease(PubSub.unbounded<Change>(), PubSub.shutdown)

    // Every node's entries, this one's included, by topic and key.
    const topics = new Map<string, Map<string, Array<TrackedMeta>>>()
    const own = new Map<string, Entry>()
    // This node's entries whose meta JSON cannot carry (a BigInt, a cycle): kept here, never announced.
    const unannounced = new Set<string>()
    const peers = new Map<string, Peer>()
    let seq = 0
    let helloPending = false
    let dropped = 0

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
      if (index === -1) return
      const [meta] = metas!.splice(index, 1)
      if (metas!.length === 0) keys!.delete(key)
      if (keys!.size === 0) topics.delete(topic)
      changes.unsafeOffer({ _tag: "Leave", topic, key, meta: meta! })
    }

    const connection = (name: string) =>
      Effect.acquireRelease(
        Effect.sync(() =>
          new Redis(config.url, {
            connectionName: `effect-channels:presence:${name}:${nodeId}`,
            lazyConnect: true,
            enableOfflineQueue: false,
            autoResubscribe: false,
            maxRetriesPerRequest: 0,
            retryStrategy
          })
        ),
        (redis) => Effect.promise(() => redis.quit().catch(() => redis.disconnect()))
      )
    const pub = yield* connection("pub")
    const sub = yield* connection("sub")
    // ioredis reports every failed attempt as an error event: the outage is logged once, below.
    pub.on("error", () => {})
    sub.on("error", () => {})

    /**
     * Sends, or gives up at once when Redis is unreachable or stops answering
     * (a frozen server: past `maxInFlight` unanswered publishes); lost changes
     * are counted for the log, and repaired by the next state.
     */
    let inFlight = 0
    const settled = () => {
      inFlight--
      return true
    }
    const send = (message: Wire.Message): Promise<boolean> => {
      const lost = () => {
        if (message.t === "delta") dropped += message.ops.length
        return false
      }
      if (pub.status !== "ready" || inFlight >= maxInFlight) return Promise.resolve(lost())
      inFlight++
      return pub.publish(channel, Wire.encode(message)).then(settled, () => {
        inFlight--
        return lost()
      })
    }

    const ownEntries = (): Array<Wire.EntryTuple> => {
      const entries: Array<Wire.EntryTuple> = []
      for (const entry of own.values()) {
        if (!unannounced.has(entry.meta.phx_ref)) entries.push([entry.topic, entry.key, entry.meta])
      }
      return entries
    }

    /** Whether the other nodes may learn of the meta; if not, it stays on this node, with a warning. */
    const announceable = (topic: string, key: string, meta: TrackedMeta) => {
      try {
        JSON.stringify(meta)
        return true
      } catch (cause) {
        unannounced.add(meta.phx_ref)
        runFork(Effect.logWarning(`presence: the meta of ${key} in ${topic} is not JSON; only this node shows it`, cause))
        return false
      }
    }

    /** Forgets an entry of this node; whether the other nodes knew of it. */
    const forget = (ref: string) => {
      own.delete(ref)
      return !unannounced.delete(ref)
    }

    const sendState = (ask: boolean) => send({ t: "state", node: nodeId, seq, ask, entries: ownEntries() })

    const announce = (ops: ReadonlyArray<Wire.Op>) => {
      seq++
      void send({ t: "delta", node: nodeId, seq, ops })
    }

    const hello = () => {
      helloPending = true
      void sendState(true).then((sent) => {
        if (!sent) return
        helloPending = false
        if (dropped > 0) {
          runFork(Effect.logWarning(
            `presence: ${dropped} changes could not reach Redis; the whole state of this node is announced again`
          ))
          dropped = 0
        }
      })
    }

    const ask = (peer: Peer, of: string, now: number) => {
      if (now - peer.askedAt < interval) return
      peer.askedAt = now
      void send({ t: "ask", node: nodeId, of })
    }

    const drop = (node: string) => {
      const peer = peers.get(node)
      if (peer === undefined) return
      peers.delete(node)
      for (const entry of peer.entries.values()) remove(entry.topic, entry.key, entry.meta.phx_ref)
    }

    const replace = (peer: Peer, entries: ReadonlyArray<Wire.EntryTuple>) => {
      const next = new Map<string, Entry>()
      for (const [topic, key, meta] of entries) next.set(meta.phx_ref, { topic, key, meta })
      for (const [ref, entry] of peer.entries) {
        if (!next.has(ref)) {
          peer.entries.delete(ref)
          remove(entry.topic, entry.key, ref)
        }
      }
      for (const [ref, entry] of next) {
        if (!peer.entries.has(ref)) {
          peer.entries.set(ref, entry)
          add(entry.topic, entry.key, entry.meta)
        }
      }
    }

    const apply = (peer: Peer, ops: ReadonlyArray<Wire.Op>) => {
      for (const op of ops) {
        if (op[0] === "j") {
          const [, topic, key, meta] = op
          if (peer.entries.has(meta.phx_ref)) continue
          peer.entries.set(meta.phx_ref, { topic, key, meta })
          add(topic, key, meta)
        } else {
          const [, topic, key, ref] = op
          if (peer.entries.delete(ref)) remove(topic, key, ref)
        }
      }
    }

    const receive = (raw: string) => {
      const decoded = Wire.decode(raw)
      if (Either.isLeft(decoded)) {
        runFork(Effect.logWarning(`presence: dropped a message that is not presence format v${Wire.version}`, decoded.left))
        return
      }
      const message = decoded.right
      if (message.node === nodeId) return
      const now = performance.now()
      switch (message.t) {
        case "bye":
          return drop(message.node)
        case "ask":
          if (message.of === nodeId) void sendState(false)
          return
      }
      let peer = peers.get(message.node)
      if (peer === undefined) {
        peers.set(message.node, peer = { seq: 0, synced: false, lastSeen: now, askedAt: -Infinity, entries: new Map() })
      }
      peer.lastSeen = now
      switch (message.t) {
        case "state":
          if (!peer.synced || message.seq > peer.seq) {
            replace(peer, message.entries)
            peer.seq = message.seq
            peer.synced = true
          }
          if (message.ask) void sendState(false)
          return
        case "delta":
          if (peer.synced && message.seq === peer.seq + 1) {
            apply(peer, message.ops)
            peer.seq = message.seq
          } else if (!peer.synced || message.seq > peer.seq) {
            peer.synced = false
            ask(peer, message.node, now)
          }
          return
        case "hb":
          if (!peer.synced || message.seq > peer.seq) {
            peer.synced = false
            ask(peer, message.node, now)
          }
          return
      }
    }

    sub.on("message", (from: string, raw: string) => {
      if (from === channel) receive(raw)
    })
    // Subscribed on every (re)connection: ioredis's own resubscription happens after "ready", too late to say hello.
    let reachable = false
    let subscribing = false
    let everReachable = false
    let firstSubscribed: () => void
    const subscribed = new Promise<void>((resolve) => firstSubscribed = resolve)
    const subscribe = () => {
      if (subscribing || reachable || sub.status !== "ready") return
      subscribing = true
      sub.subscribe(channel).then(() => {
        subscribing = false
        if (everReachable) runFork(Effect.logInfo("presence: Redis is reachable again"))
        reachable = everReachable = true
        firstSubscribed()
        hello()
      }, () => {
        subscribing = false
      })
    }
    sub.on("ready", subscribe)
    let stopping = false
    sub.on("close", () => {
      if (reachable && !stopping) runFork(Effect.logWarning("presence: Redis is unreachable; presence goes on on this node"))
      reachable = false
    })

    // Starting is not held up by Redis: a node serves its own clients while
    // Redis is away, and joins the others once it is back (ioredis goes on
    // reconnecting after a failed first attempt).
    pub.connect().catch(() => {})
    sub.connect().catch(() => {})
    yield* Effect.promise(() => subscribed).pipe(
      Effect.timeout(config.connectTimeout),
      Effect.catchTag("TimeoutException", () =>
        Effect.logWarning(
          `presence: Redis not ready after ${Duration.format(config.connectTimeout)}; presence stays on this node until it is`
        ))
    )

    // A clean stop: the others drop this node's entries at once, not after the down period.
    // Registered before the heartbeat starts, so that the heartbeat stops first.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        stopping = true
        return Effect.promise(() => send({ t: "bye", node: nodeId }))
      }).pipe(Effect.timeout("1 second"), Effect.ignore)
    )

    // The heartbeat and the down check; a subscription or a hello that failed is retried here.
    yield* Effect.forkScoped(Effect.repeat(
      Effect.sync(() => {
        subscribe()
        if (helloPending) hello()
        else void send({ t: "hb", node: nodeId, seq })
        const now = performance.now()
        for (const [node, peer] of peers) if (now - peer.lastSeen > downAfter) drop(node)
      }),
      Schedule.spaced(config.heartbeatInterval)
    ))

    const store: Presence.Store = {
      track: (topic, key, meta) =>
        Effect.sync(() => {
          own.set(meta.phx_ref, { topic, key, meta })
          add(topic, key, meta)
          if (announceable(topic, key, meta)) announce([["j", topic, key, meta]])
        }),
      update: (topic, key, ref, meta) =>
        Effect.sync(() => {
          if (!own.has(ref)) return
          const known = forget(ref)
          remove(topic, key, ref)
          own.set(meta.phx_ref, { topic, key, meta })
          add(topic, key, meta)
          const ops: Array<Wire.Op> = known ? [["l", topic, key, ref]] : []
          if (announceable(topic, key, meta)) ops.push(["j", topic, key, meta])
          if (ops.length > 0) announce(ops)
        }),
      untrack: (topic, key, ref) =>
        Effect.sync(() => {
          if (!own.has(ref)) return
          const known = forget(ref)
          remove(topic, key, ref)
          if (known) announce([["l", topic, key, ref]])
        }),
      list: (topic) =>
        Effect.sync(() => {
          // No prototype: a key such as "__proto__" is a key like any other.
          const state: Record<string, { metas: ReadonlyArray<TrackedMeta> }> = Object.create(null)
          for (const [key, metas] of topics.get(topic) ?? []) state[key] = { metas: [...metas] }
          return state as Presence.State
        }),
      changes: PubSub.subscribe(changes)
    }
    return store
  })
