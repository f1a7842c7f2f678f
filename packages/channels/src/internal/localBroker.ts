import * as Chunk from "effect/Chunk"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as RcMap from "effect/RcMap"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"
import type { Envelope, Service, Subscriber } from "../Broker.js"
import { ChannelHistory } from "../ChannelHistory.js"
import { Histories } from "./history.js"
import * as Telemetry from "./metrics.js"

/**
 * A topic: its `PubSub`, and one fiber that takes what is published, in
 * order, and hands it to the local subscribers.
 */
interface Topic {
  readonly pubsub: PubSub.PubSub<Envelope>
  readonly subscribers: Set<Subscriber>
}

const withoutParentSpan = (context: Context.Context<never>): Context.Context<never> =>
  Context.omit(Tracer.ParentSpan)(context)

const makeTopic = (metrics: boolean) => Effect.gen(function*() {
  const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)
  const subscription = yield* PubSub.subscribe(pubsub)
  const subscribers = new Set<Subscriber>()
  // Interruptible, though made inside `subscribe`'s uninterruptible region:
  // the topic's scope interrupts it when the last subscriber leaves. Without
  // the first subscriber's span (its join's), which it would hold for good
  // and run every step under.
  yield* Effect.forkScoped(Effect.mapInputContext(Effect.interruptible(Effect.forever(Effect.map(
    Queue.takeBetween(subscription, 1, Number.MAX_SAFE_INTEGER),
    (envelopes) => {
      const batch = Chunk.toReadonlyArray(envelopes)
      const startedAt = metrics ? performance.now() : 0
      for (const subscriber of subscribers) {
        try {
          subscriber.deliver(batch)
        } catch {
          // A subscriber must not throw; one that does misses this batch, its neighbours do not.
        }
      }
      if (metrics) {
        Telemetry.fanoutTime(startedAt)
        Telemetry.flushFanout()
      }
    }
  ))), withoutParentSpan))
  return { pubsub, subscribers } satisfies Topic
})

/** A topic with subscribers, and the scope of its `RcMap` lease, closed when the last one leaves. */
interface Live {
  readonly topic: Topic
  readonly lease: Scope.CloseableScope
}

/** How often the histories drop what has expired (a read checks, whatever the sweep did). */
const sweepInterval = Duration.seconds(10)

/** @internal */
export const make = Effect.gen(function*() {
  const { recorder, tracing } = yield* Telemetry.telemetry
  const history = yield* ChannelHistory
  const histories = new Histories(history, yield* Effect.clock)
  if (history.enabled) {
    yield* Effect.forkScoped(Effect.schedule(Effect.sync(() => histories.sweep()), Schedule.spaced(sweepInterval)))
  }
  // The `RcMap` makes each topic once, however many subscribe at the same
  // time; one lease per topic holds it while it has subscribers, so that a
  // subscription is a set entry, not an acquisition of its own.
  const topics = yield* RcMap.make({ lookup: (_topic: string) => makeTopic(recorder.enabled) })
  const live = new Map<string, Live>()
  const all = yield* Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)

  const lease = (name: string, subscriber: Subscriber) =>
    Effect.flatMap(Scope.make(), (scope) =>
      Effect.flatMap(Scope.extend(RcMap.get(topics, name), scope), (topic) =>
        Effect.suspend(() => {
          const current = live.get(name)
          if (current !== undefined) {
            // Another subscriber made the topic live meanwhile: join it, give the lease back.
            current.topic.subscribers.add(subscriber)
            return Scope.close(scope, Exit.void)
          }
          topic.subscribers.add(subscriber)
          live.set(name, { topic, lease: scope })
          return Effect.void
        })))

  // A broadcast on a topic with a history gets its position as it is
  // published, so that positions follow the order of delivery; one that has
  // one that has its position already (from another node) keeps it, and
  // `publishLocal` (presence diffs) gives none.
  const deliver = (envelope: Envelope) =>
    Effect.zipRight(
      PubSub.publish(all, envelope),
      Effect.suspend(() => {
        const current = live.get(envelope.message.topic)
        return current === undefined ? Effect.void : PubSub.publish(current.topic.pubsub, envelope)
      })
    )
  // The position is given and the envelope handed to the topic's `PubSub` in
  // one synchronous step (both `PubSub`s are unbounded: an offer always
  // succeeds): a fiber that yielded between the two would let a later
  // position be delivered before it.
  const deliverNow = (envelope: Envelope) => {
    all.unsafeOffer(envelope)
    live.get(envelope.message.topic)?.topic.pubsub.unsafeOffer(envelope)
  }
  const publish = history.enabled
    ? (envelope: Envelope) => {
      const options = envelope.position === undefined ? history.of(envelope.message.topic) : undefined
      return options === undefined ? deliver(envelope) : Effect.sync(() => deliverNow(histories.append(envelope, options)))
    }
    : deliver

  const service: Service = {
    publish: tracing
      ? (envelope) => Telemetry.broadcastSpan(publish(envelope), envelope.message.topic, envelope.message.event)
      : publish,
    publishLocal: deliver,
    subscribe: (name, subscriber) =>
      Effect.uninterruptible(Effect.suspend(() => {
        const current = live.get(name)
        if (current === undefined) return lease(name, subscriber)
        current.topic.subscribers.add(subscriber)
        return Effect.void
      })),
    unsubscribe: (name, subscriber) =>
      Effect.suspend(() => {
        const current = live.get(name)
        if (current === undefined || !current.topic.subscribers.delete(subscriber)) return Effect.void
        if (current.topic.subscribers.size > 0) return Effect.void
        live.delete(name)
        return Scope.close(current.lease, Exit.void)
      }),
    subscribers: (name) => Effect.sync(() => live.get(name)?.topic.subscribers.size ?? 0),
    published: PubSub.subscribe(all),
    history,
    recover: (topic, since) => Effect.sync(() => histories.recover(topic, since))
  }
  return service
})
