import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as Queue from "effect/Queue"
import * as RcMap from "effect/RcMap"
import type { Envelope, Service, Subscriber } from "../Broker.js"

/**
 * A topic: its `PubSub`, and one fiber that takes what is published, in
 * order, and hands it to the local subscribers.
 */
const makeTopic = Effect.gen(function*() {
  const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)
  const subscription = yield* PubSub.subscribe(pubsub)
  const subscribers = new Set<Subscriber>()
  yield* Effect.forkScoped(Effect.forever(Effect.map(
    Queue.takeBetween(subscription, 1, Number.MAX_SAFE_INTEGER),
    (envelopes) => {
      const batch = Chunk.toReadonlyArray(envelopes)
      for (const subscriber of subscribers) subscriber(batch)
    }
  )))
  return { pubsub, subscribers }
})

/** @internal */
export const make = Effect.gen(function*() {
  const topics = yield* RcMap.make({ lookup: (_topic: string) => makeTopic })
  const counts = new Map<string, number>()
  const all = yield* Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)

  const service: Service = {
    publish: (envelope) =>
      Effect.zipRight(
        PubSub.publish(all, envelope),
        Effect.suspend(() =>
          counts.has(envelope.message.topic)
            ? Effect.scoped(Effect.flatMap(RcMap.get(topics, envelope.message.topic), (topic) =>
              PubSub.publish(topic.pubsub, envelope)))
            : Effect.void
        )
      ),
    subscribe: (topic, subscriber) =>
      Effect.flatMap(RcMap.get(topics, topic), ({ subscribers }) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            subscribers.add(subscriber)
            counts.set(topic, (counts.get(topic) ?? 0) + 1)
          }),
          () =>
            Effect.sync(() => {
              subscribers.delete(subscriber)
              const left = counts.get(topic)! - 1
              if (left === 0) counts.delete(topic)
              else counts.set(topic, left)
            })
        )),
    subscribers: (topic) => Effect.sync(() => counts.get(topic) ?? 0),
    published: PubSub.subscribe(all)
  }
  return service
})
