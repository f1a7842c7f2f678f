import { Broker, ChannelHistory, ChannelMetrics } from "@effect-channels/core"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as Runtime from "effect/Runtime"
import type * as Scope from "effect/Scope"
import type { Resolved } from "./config.js"
import * as Codec from "./codec.js"
import * as History from "./history.js"
import * as Link from "./link.js"
import { metrics } from "./metrics.js"
import { Sequencer } from "./sequencer.js"

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

/** The local broker under this one keeps no history: positions are Redis's. */
const noHistory: ChannelHistory.Config = { of: () => undefined, enabled: false }

/**
 * A broker over Redis. Delivery on this node is the local broker's (one
 * fiber per topic, one encode per serializer, batches): what this node
 * publishes goes to its local subscribers at once, and to Redis for the
 * others; what Redis brings from other nodes is published to the local broker.
 * A node's own messages, which Redis also sends back to it, are skipped by
 * their origin, so they reach local subscribers once.
 *
 * A topic with a history is the exception: its broadcasts go to Redis only,
 * where a script gives each its position as it stores and publishes it, and
 * every node, this one included, delivers them as Redis sends them back,
 * in the order of their positions (see `Sequencer`).
 *
 * @internal
 */
export const make = (config: Resolved): Effect.Effect<Made, never, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const history = yield* ChannelHistory.ChannelHistory
    const local = yield* Effect.provideService(Broker.makeLocal, ChannelHistory.ChannelHistory, noHistory)
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
      warn("dropped", `effect-channels/redis: broadcasts to other nodes, or on topics with a history, dropped (${why})`)
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
          if (decoded.envelope.position === undefined) Queue.unsafeOffer(inbox, decoded.envelope)
          else sequencer.receive(decoded.envelope)
        },
        reconnected: () => {
          if (remote.size === 0) return
          // What was published while the subscriber connection was down is read from the histories.
          for (const topic of remote) {
            link.subscribe(channelOf(topic)).then(() => sequencer.check(topic), ignore)
          }
          Runtime.runFork(runtime)(Effect.logInfo("effect-channels/redis: connected to Redis, topics subscribed").pipe(
            Effect.annotateLogs({ node: config.nodeId, topics: remote.size })
          ))
        },
        error: (error) => warn("error", `effect-channels/redis: ${error.message}`)
      }
    }

    const historyKeys = (topic: string) => History.keys(config.prefix, topic, config.cluster !== undefined)

    // Bounded, so that a join or a gap fill never waits on a Redis that does not answer.
    const read = (topic: string, since: ChannelHistory.Position | undefined, options: ChannelHistory.Resolved) =>
      new Promise<History.Read>((resolve, reject) => {
        if (!link.writable()) return reject(new Error("Redis is unreachable"))
        const timer = setTimeout(() => reject(new Error("Redis did not answer")), Duration.toMillis(config.subscribeTimeout))
        link.history("read", historyKeys(topic), History.readArgs(since, options)).then(
          (reply) => resolve(History.parseRead(reply, since, options)),
          reject
        ).finally(() => clearTimeout(timer))
      })

    const sequencer = new Sequencer(
      (envelope) => Queue.unsafeOffer(inbox, envelope),
      (topic, since) => {
        const options = history.of(topic)
        return options === undefined ? Promise.reject(new Error("no history")) : read(topic, since, options)
      },
      (topic) => remote.has(topic)
    )

    // Envelopes from Redis, in the order Redis delivered them, to the local topics.
    yield* Effect.forkScoped(Effect.forever(Effect.flatMap(
      Queue.takeBetween(inbox, 1, Number.MAX_SAFE_INTEGER),
      (envelopes) => Effect.forEach(envelopes, local.publish, { discard: true })
    )))

    // Without a position from Redis, a broadcast on a topic with a history is
    // delivered nowhere: never out of the order of positions.
    const send = (envelope: Broker.Envelope, options: ChannelHistory.Resolved | undefined) => {
      if (!link.writable()) return drop("Redis is unreachable")
      if (pending >= config.maxPendingPublishes) return drop("too many publishes waiting for Redis")
      let frame: Buffer
      try {
        frame = Codec.encode(config.nodeId, envelope)
      } catch (error) {
        return drop(error instanceof Error ? error.message : String(error))
      }
      pending++
      const { topic } = envelope.message
      const sent = options === undefined
        ? link.publish(channelOf(topic), frame)
        : link.history("append", historyKeys(topic), History.appendArgs(frame, channelOf(topic), options, link.publishCommand))
      sent.then(settled, failed)
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
          sequencer.forget(topic)
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
      publish: (envelope) => {
        const options = history.enabled && envelope.position === undefined ? history.of(envelope.message.topic) : undefined
        const published = Effect.zipRight(PubSub.publish(all, envelope), Effect.sync(() => send(envelope, options)))
        return options === undefined ? Effect.zipRight(local.publish(envelope), published) : published
      },
      // This node's subscribers only: presence diffs, which each node makes for its own clients.
      publishLocal: (envelope) => Effect.zipRight(local.publish(envelope), PubSub.publish(all, envelope)),
      subscribe: (topic, subscriber) => Effect.zipRight(local.subscribe(topic, subscriber), reconcile(topic)),
      unsubscribe: (topic, subscriber) => Effect.zipRight(local.unsubscribe(topic, subscriber), reconcile(topic)),
      subscribers: local.subscribers,
      published: PubSub.subscribe(all),
      history,
      recover: (topic, since) => {
        const options = history.of(topic)
        if (options === undefined) return Effect.succeed(undefined)
        return Effect.promise(() =>
          read(topic, since, options).then(
            (found) => {
              sequencer.baseline(topic, found.position)
              return History.recovery(found)
            },
            (error: unknown) => {
              warn("error", `effect-channels/redis: history of ${topic} not read (${error instanceof Error ? error.message : String(error)})`)
              return History.unreachable
            }
          )
        )
      }
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
