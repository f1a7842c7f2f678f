// What a topic's history costs in memory: the heap held per broadcast kept,
// in one process, with the local broker (the history of one node). Each
// broadcast is the chat's message, delivered to a subscriber that encodes
// it as a connection does (the envelope then holds its frame, which the
// history keeps with it).
//
//   pnpm --filter @effect-channels/bench history
//
// Run with `--expose-gc` (the script does) so that the heap is measured after a full collection.
import { Broker, ChannelHistory, Message, Serializer } from "@effect-channels/core"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

const topics = 100
const size = 1000
const perTopic = 1000

const gc = (globalThis as { gc?: () => void }).gc
if (gc === undefined) throw new Error("run with node --expose-gc")

const heap = () => {
  gc()
  gc()
  return process.memoryUsage().heapUsed
}

const fill = (broker: Broker.Service, prefix: string) =>
  Effect.gen(function*() {
    const subscriber: Broker.Subscriber = {
      deliver: (envelopes) => {
        for (const envelope of envelopes) envelope.frame(Serializer.V2)
      }
    }
    for (let t = 0; t < topics; t++) yield* broker.subscribe(`${prefix}:${t}`, subscriber)
    for (let seq = 0; seq < perTopic; seq++) {
      for (let t = 0; t < topics; t++) {
        yield* broker.publish(new Broker.Envelope(Message.broadcast(`${prefix}:${t}`, "new:msg", {
          user: "bench",
          body: `a chat message, number ${seq}`,
          seq
        })))
      }
      // Let the topics' fibers deliver as a connection would see them.
      if (seq % 100 === 99) yield* Effect.sleep("1 millis")
    }
    yield* Effect.sleep("50 millis")
  })

const main = Effect.gen(function*() {
  const history = ChannelHistory.layer({ "kept:*": { size, ttl: "1 hour" } })
  const context = yield* Layer.build(Broker.layerLocal.pipe(Layer.provide(Layer.orDie(history))))
  const broker = Context.get(context, Broker.Broker)
  const before = heap()
  yield* fill(broker, "plain")
  const plain = heap()
  yield* fill(broker, "kept")
  const kept = heap()
  const entries = topics * perTopic
  console.log(`${topics} topics × ${perTopic} broadcasts, a history of ${size} per topic`)
  console.log(`heap after broadcasts on topics without a history: +${((plain - before) / 1024).toFixed(0)} KiB`)
  console.log(`heap per history entry: ${((kept - plain) / entries).toFixed(0)} bytes (${entries} entries)`)
})

Effect.runPromise(Effect.scoped(main)).then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
