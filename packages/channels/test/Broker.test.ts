/**
 * The local broker: a topic made once however many subscribe at the same
 * time, delivered in order, shut down with its last subscriber and made
 * anew after; a broadcast to an empty topic creates nothing; a subscriber
 * that throws misses its batch, and only it; `publishLocal` is `publish`.
 */
import { Broker } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Queue from "effect/Queue"
import * as Message from "../src/protocol/Message.js"

/** A subscriber that records the payloads it is delivered. */
class Recorder implements Broker.Subscriber {
  readonly seen: Array<unknown> = []
  deliver(envelopes: ReadonlyArray<Broker.Envelope>) {
    for (const envelope of envelopes) this.seen.push(envelope.message.payload)
  }
}

const publish = (broker: Broker.Service, topic: string, payload: unknown) =>
  broker.publish(new Broker.Envelope(Message.broadcast(topic, "event", payload)))

/** Waits (real time) until `check` holds, up to 2 s. */
const until = (check: () => boolean) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200 && !check(); i++) yield* Effect.sleep("10 millis")
    expect(check()).toBe(true)
  })

describe("Broker.layerLocal", () => {
  it.scopedLive("publishLocal delivers in order with publish, and is seen by `published`", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const published = yield* broker.published
      const recorder = new Recorder()
      yield* broker.subscribe("room:l", recorder)
      yield* publish(broker, "room:l", 1)
      yield* broker.publishLocal(new Broker.Envelope(Message.broadcast("room:l", "event", 2)))
      yield* publish(broker, "room:l", 3)
      yield* until(() => recorder.seen.length === 3)
      expect(recorder.seen).toEqual([1, 2, 3])
      expect((yield* Queue.takeAll(published)).pipe(Chunk.map((envelope) => envelope.message.payload), Chunk.toArray))
        .toEqual([1, 2, 3])
    }))

  it.scopedLive("100 concurrent first subscribers share one topic; every one gets every broadcast, in order", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const recorders = Array.from({ length: 100 }, () => new Recorder())
      const fibers = yield* Effect.forEach(
        recorders,
        (recorder) => Effect.fork(Effect.zipRight(Effect.yieldNow(), broker.subscribe("room:a", recorder))),
        { concurrency: "unbounded" }
      )
      yield* Fiber.joinAll(fibers)
      expect(yield* broker.subscribers("room:a")).toBe(100)
      for (let n = 0; n < 50; n++) yield* publish(broker, "room:a", n)
      const expected = Array.from({ length: 50 }, (_, n) => n)
      yield* until(() => recorders.every((recorder) => recorder.seen.length === 50))
      for (const recorder of recorders) expect(recorder.seen).toEqual(expected)
    }))

  it.scopedLive("the last unsubscribe shuts the topic down; a later subscriber gets a new one, and only later broadcasts", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const first = new Recorder()
      const second = new Recorder()
      yield* broker.subscribe("room:b", first)
      yield* broker.subscribe("room:b", second)
      yield* publish(broker, "room:b", 1)
      yield* until(() => first.seen.length === 1 && second.seen.length === 1)
      yield* broker.unsubscribe("room:b", first)
      yield* broker.unsubscribe("room:b", first) // twice is once
      expect(yield* broker.subscribers("room:b")).toBe(1)
      yield* broker.unsubscribe("room:b", second)
      expect(yield* broker.subscribers("room:b")).toBe(0)
      // Nobody listens: nothing is made, nothing is kept for later.
      yield* publish(broker, "room:b", 2)
      const third = new Recorder()
      yield* broker.subscribe("room:b", third)
      yield* publish(broker, "room:b", 3)
      yield* until(() => third.seen.length === 1)
      yield* Effect.sleep("50 millis")
      expect(third.seen).toEqual([3])
      expect(first.seen).toEqual([1])
      expect(second.seen).toEqual([1])
    }))

  it.scopedLive("subscribing twice delivers once", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const recorder = new Recorder()
      yield* broker.subscribe("room:c", recorder)
      yield* broker.subscribe("room:c", recorder)
      expect(yield* broker.subscribers("room:c")).toBe(1)
      yield* publish(broker, "room:c", "once")
      yield* until(() => recorder.seen.length === 1)
      yield* Effect.sleep("50 millis")
      expect(recorder.seen).toEqual(["once"])
    }))

  it.scopedLive("a subscriber that throws misses its batch; its neighbours and the topic go on", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const before = new Recorder()
      const after = new Recorder()
      let thrown = 0
      yield* broker.subscribe("room:d", before)
      yield* broker.subscribe("room:d", {
        deliver: () => {
          thrown++
          throw new Error("a broken subscriber")
        }
      })
      yield* broker.subscribe("room:d", after)
      yield* publish(broker, "room:d", 1)
      yield* until(() => after.seen.length === 1)
      yield* publish(broker, "room:d", 2)
      yield* until(() => after.seen.length === 2)
      expect(before.seen).toEqual([1, 2])
      expect(after.seen).toEqual([1, 2])
      expect(thrown).toBeGreaterThanOrEqual(1)
    }))

  it.scopedLive("subscribeScoped ends the subscription with its scope", () =>
    Effect.gen(function*() {
      const broker = yield* Broker.makeLocal
      const recorder = new Recorder()
      yield* Effect.scoped(Effect.gen(function*() {
        yield* Broker.subscribeScoped(broker, "room:e", recorder)
        expect(yield* broker.subscribers("room:e")).toBe(1)
      }))
      expect(yield* broker.subscribers("room:e")).toBe(0)
    }))
})
