import * as Effect from "effect/Effect"
import * as PubSub from "effect/PubSub"
import * as RcMap from "effect/RcMap"
import type { Envelope, Service } from "../Broker.js"

/** @internal */
export const make = Effect.gen(function*() {
  const topics = yield* RcMap.make({
    lookup: (_topic: string) => Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)
  })
  const counts = new Map<string, number>()
  const all = yield* Effect.acquireRelease(PubSub.unbounded<Envelope>(), PubSub.shutdown)

  const count = (topic: string, delta: number) =>
    Effect.sync(() => {
      const next = (counts.get(topic) ?? 0) + delta
      if (next === 0) counts.delete(topic)
      else counts.set(topic, next)
    })

  const service: Service = {
    publish: (envelope) =>
      Effect.zipRight(
        PubSub.publish(all, envelope),
        Effect.suspend(() =>
          counts.has(envelope.message.topic)
            ? Effect.scoped(Effect.flatMap(RcMap.get(topics, envelope.message.topic), (pubsub) =>
              PubSub.publish(pubsub, envelope)))
            : Effect.void
        )
      ),
    subscribe: (topic) =>
      Effect.gen(function*() {
        const pubsub = yield* RcMap.get(topics, topic)
        const subscription = yield* PubSub.subscribe(pubsub)
        yield* Effect.acquireRelease(count(topic, 1), () => count(topic, -1))
        return subscription
      }),
    subscribers: (topic) => Effect.sync(() => counts.get(topic) ?? 0),
    published: PubSub.subscribe(all)
  }
  return service
})
