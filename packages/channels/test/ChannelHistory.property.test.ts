/**
 * Recovery over random schedules, on one node: broadcasts (from fibers of
 * their own, concurrent with what follows), abrupt cuts
 * (the transport ends without a goodbye) and rejoins with the last position
 * the client saw. Each client's view is the topic's sequence, each
 * broadcast once and in order, from its first join on; a rejoin told
 * `_recovered: false` (its position fell out of the history of 5) restarts
 * the view at the position the reply gives, and only then.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import fc from "fast-check"
import * as ChannelBroadcaster from "../src/ChannelBroadcaster.js"
import * as ChannelHandler from "../src/ChannelHandler.js"
import * as ChannelHistory from "../src/ChannelHistory.js"
import * as ChannelTest from "../src/ChannelTest.js"

const Handler = ChannelHandler.layer({ join: (conn) => Effect.succeed(conn.allowJoin()) })
const TestLayer = Handler.pipe(
  Layer.provideMerge(ChannelTest.layer),
  Layer.provide(Layer.orDie(ChannelHistory.layer({ "rooms:*": { size: 5, ttl: "1 hour" } })))
)

type Step =
  | { readonly _tag: "broadcast"; readonly count: number }
  | { readonly _tag: "cut"; readonly client: number }
  | { readonly _tag: "rejoin"; readonly client: number }

const clients = 3
const step: fc.Arbitrary<Step> = fc.oneof(
  fc.record({ _tag: fc.constant("broadcast" as const), count: fc.integer({ min: 1, max: 4 }) }),
  fc.record({ _tag: fc.constant("cut" as const), client: fc.integer({ min: 0, max: clients - 1 }) }),
  fc.record({ _tag: fc.constant("rejoin" as const), client: fc.integer({ min: 0, max: clients - 1 }) })
)

/** A client: its socket while connected, what it received, and where it stands. */
interface Client {
  socket: ChannelTest.TestSocket | undefined
  /** The offsets received since its last unrecovered join, after `from`. */
  segments: Array<{ from: number; offsets: Array<number> }>
  position: string | undefined
  /** The messages of the current socket already read. */
  read: number
}

/** Reads what the client's socket received since last time: the positions of its broadcasts. */
const drain = (client: Client) => {
  if (client.socket === undefined) return
  const received = ChannelTest.received(client.socket)
  for (; client.read < received.length; client.read++) {
    const message = received[client.read]!
    if (message._tag !== "Push" || message.event !== "msg") continue
    const position = ChannelHistory.parse(message.ref)!
    client.position = message.ref!
    client.segments.at(-1)!.offsets.push(position.offset)
  }
}

const join = (client: Client) =>
  Effect.gen(function*() {
    const socket = yield* ChannelTest.connect({}, { socket: { logLevel: false } })
    const channel = yield* ChannelTest.join(
      socket,
      "rooms:lobby",
      client.position === undefined ? {} : { _position: client.position }
    )
    const reply = channel.reply as { readonly _position: string; readonly _recovered: boolean }
    if (!reply._recovered) client.segments.push({ from: ChannelHistory.parse(reply._position)!.offset, offsets: [] })
    client.position = reply._position
    client.socket = socket
    client.read = 0
  })

const run = (steps: ReadonlyArray<Step>) =>
  Effect.gen(function*() {
    const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
    const all: Array<Client> = Array.from({ length: clients }, () => ({
      socket: undefined,
      segments: [],
      position: undefined,
      read: 0
    }))
    for (const client of all) yield* join(client)
    let sent = 0
    const senders: Array<Fiber.RuntimeFiber<void, unknown>> = []
    for (const step of steps) {
      if (step._tag === "broadcast") {
        // Broadcast from a fiber of their own, while the next steps (joins, cuts) go on.
        sent += step.count
        senders.push(yield* Effect.fork(Effect.forEach(
          Array.from({ length: step.count }),
          () => Effect.zipRight(broadcaster.broadcast("rooms:lobby", "msg", {}), Effect.yieldNow()),
          { discard: true }
        )))
        yield* Effect.yieldNow()
        continue
      }
      const client = all[step.client]!
      if (step._tag === "cut" && client.socket !== undefined) {
        drain(client)
        yield* ChannelTest.abort(client.socket)
        client.socket = undefined
      } else if (step._tag === "rejoin" && client.socket === undefined) {
        yield* join(client)
      }
    }
    yield* Fiber.joinAll(senders)
    for (const client of all) if (client.socket === undefined) yield* join(client)
    // Every connected client has every broadcast.
    yield* Effect.sleep("20 millis")
    for (const client of all) {
      drain(client)
      const segments = client.segments
      // Recovered rejoins continue a segment; each segment runs without gap or repeat to the end.
      for (const [i, segment] of segments.entries()) {
        const end = i === segments.length - 1 ? sent : segment.offsets.at(-1) ?? segment.from
        expect(segment.offsets).toEqual(Array.from({ length: end - segment.from }, (_, k) => segment.from + k + 1))
      }
    }
  }).pipe(Effect.scoped, Effect.provide(TestLayer))

describe("ChannelHistory, random schedules on one node", () => {
  it.live("each client sees the topic's sequence once, in order, or is told it did not recover", () =>
    Effect.promise(() =>
      fc.assert(fc.asyncProperty(fc.array(step, { minLength: 5, maxLength: 40 }), (steps) => Effect.runPromise(run(steps))), {
        numRuns: 60
      })
    ))
})
