import { Broker, ChannelMetrics } from "@effect-channels/core"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type { Resolved } from "./config.js"
import * as Codec from "./codec.js"
import * as Link from "./link.js"
import { metrics } from "./metrics.js"

/** @internal */
export interface Stats {
  published: number
  received: number
  dropped: number
  malformed: number
}

/** @internal */
export interface Made {
  readonly broker: Broker.Service
  readonly link: Link.Link
  readonly stats: Stats
  readonly topics: () => number
}

/** At most one warning of each kind per interval, with the count since the last one. */
const warnEvery = 10_000

/**
 * A broker over Redis. Delivery on this node is the local broker's (one
 * fiber per topic, one encode per serializer, batches): what this node
 * publishes goes to its local subscribers at once, and to Redis for the
 * others; what Redis brings from other nodes is published to the local broker.
 * A node's own messages, which Redis also sends back to it, are skipped by
 * their origin, so they reach local subscribers once.
 *
 * @internal
 */
export const make = (config: Resolved): Effect.Effect<Made, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const local = yield* Broker.makeLocal
    const all = yield* Effect.acquireRelease(PubSub.unbounded<Broker.Envelope>(), PubSub.shutdown)
    const inbox = yield* Effect.acquireRelease(Queue.unbounded<Broker.Envelope>(), Queue.shutdown)
    const stats: Stats = { published: 0, received: 0, dropped: 0, malformed: 0 }
    // Off after the broker closes, so that the topics gauge is given back once.
    let record = yield* ChannelMetrics.MetricsEnabled
    const count = (metric: keyof Stats) => {
      stats[metric]++
      if (record) metrics[metric].unsafeUpdate(1, [])
    }
    const channelOf = (topic: string) => `${config.prefix}:${topic}`
    // Topics subscribed at Redis: those with local subscribers.
    const remote = new Set<string>()
    // The SUBSCRIBE in flight for a topic, which a joiner waits for.
    const acks = new Map<string, Promise<unknown>>()

    const lastWarning = { dropped: 0, malformed: 0, error: 0 }
    const warn = (kind: keyof typeof lastWarning, message: string) => {
      const now = Date.now()
      if (now - lastWarning[kind] < warnEvery) return
      lastWarning[kind] = now
      Runtime.runFork(runtime)(Effect.logWarning(message).pipe(
        Effect.annotateLogs({ node: config.nodeId, ...stats })
      ))
    }

    const drop = (why: string) => {
      count("dropped")
      warn("dropped", `effect-channels/redis: broadcasts to other nodes dropped (${why})`)
    }

    let pending = 0
    const settled = () => {
      pending--
      count("published")
    }
    const failed = (error: unknown) => {
      pending--
      drop(error instanceof Error ? error.message : String(error))
    }

    const link = config.cluster === undefined
      ? Link.standalone(config.url, config.nodeId, handlers())
      : Link.cluster(config.cluster.nodes, config.cluster.sharded, config.nodeId, handlers())
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Effect.sync(() => {
          if (record) metrics.topics.unsafeModify(-remote.size, [])
          record = false
        }),
        Effect.promise(link.close)
      )
    )

    function handlers(): Link.Handlers {
      return {
        message: (frame) => {
          const decoded = Codec.decode(frame, config.nodeId)
          if (decoded === undefined) return
          if (typeof decoded === "string") {
            count("malformed")
            warn("malformed", `effect-channels/redis: unreadable message from Redis (${decoded})`)
            return
          }
          count("received")
          Queue.unsafeOffer(inbox, decoded.envelope)
        },
        reconnected: () => {
          if (remote.size === 0) return
          for (const topic of remote) link.subscribe(channelOf(topic)).catch(ignore)
          Runtime.runFork(runtime)(Effect.logInfo("effect-channels/redis: connected to Redis, topics subscribed").pipe(
            Effect.annotateLogs({ node: config.nodeId, topics: remote.size })
          ))
        },
        error: (error) => warn("error", `effect-channels/redis: ${error.message}`)
      }
    }

    // Envelopes from other nodes, in the order Redis delivered them, to the local topics.
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(
      Queue.takeBetween(inbox, 1, Number.MAX_SAFE_INTEGER),
      (envelopes) => Effect.forEach(envelopes, local.publish, { discard: true })
    )))

    const send = (envelope: Broker.Envelope) => {
      if (!link.writable()) return drop("Redis is unreachable")
      if (pending >= config.maxPendingPublishes) return drop("too many publishes waiting for Redis")
      let frame: Buffer
      try {
        frame = Codec.encode(config.nodeId, envelope)
      } catch (error) {
        return drop(error instanceof Error ? error.message : String(error))
      }
      pending++
      link.publish(channelOf(envelope.message.topic), frame).then(settled, failed)
    }

    const subscribers = (topic: string) => Effect.runSync(local.subscribers(topic))

    // Brings the Redis subscription of a topic in line with its local
    // subscribers, in one synchronous step: the commands go to Redis in the
    // order of the changes, so the last one wins.
    const reconcile = (topic: string) =>
      Effect.suspend(() => {
        const here = subscribers(topic)
        const before = remote.size
        if (here > 0 && !remote.has(topic)) {
          remote.add(topic)
          const ack = link.subscribe(channelOf(topic)).finally(() => {
            if (acks.get(topic) === ack) acks.delete(topic)
          })
          ack.catch(ignore)
          acks.set(topic, ack)
        } else if (here === 0 && remote.has(topic)) {
          remote.delete(topic)
          acks.delete(topic)
          link.unsubscribe(channelOf(topic)).catch(ignore)
        }
        if (record && remote.size !== before) metrics.topics.unsafeModify(remote.size - before, [])
        const ack = acks.get(topic)
        // A joiner waits for its topic's SUBSCRIBE, so that a broadcast sent
        // from another node after its join reaches it; but never longer than
        // `subscribeTimeout` (Redis down: the reconnection resubscribes).
        return ack === undefined ? Effect.void : Effect.ignore(Effect.timeout(
          Effect.promise(() => ack.catch(ignore)),
          config.subscribeTimeout
        ))
      })

    const broker: Broker.Service = {
      publish: (envelope) =>
        Effect.zipRight(
          local.publish(envelope),
          Effect.zipRight(PubSub.publish(all, envelope), Effect.sync(() => send(envelope)))
        ),
      // This node's subscribers only: presence diffs, which each node makes for its own clients.
      publishLocal: (envelope) => Effect.zipRight(local.publish(envelope), PubSub.publish(all, envelope)),
      subscribe: (topic, subscriber) => Effect.zipRight(local.subscribe(topic, subscriber), reconcile(topic)),
      unsubscribe: (topic, subscriber) => Effect.zipRight(local.unsubscribe(topic, subscriber), reconcile(topic)),
      subscribers: local.subscribers,
      published: PubSub.subscribe(all),
      history: local.history,
      recover: local.recover
    }

    // Starting is not held up by Redis: a node serves its own clients while
    // Redis is away, and joins the others once it is back.
    yield* Effect.promise(() => link.ready).pipe(
      Effect.timeout(config.connectTimeout),
      Effect.catchTag("TimeoutException", () =>
        Effect.logWarning(
          `effect-channels/redis: Redis not ready after ${Duration.format(config.connectTimeout)}; serving this node alone until it is`
        ))
    )

    return { broker, link, stats, topics: () => remote.size }
  })

const ignore = () => {}

/** The machinery behind each node's public service, for `ClusterConnections`. @internal */
export const nodes = new WeakMap<object, { readonly made: Made; readonly config: Resolved }>()
