/**
 * A rejoin's replay, larger than `outboundBufferLimit`, over a transport whose
 * unsent bytes this test decides (what a WebSocket's `bufferedAmount` is): it
 * goes out in turns that fit the bound, each once the client has taken most
 * of the one before; a client that takes nothing is dropped as slow after
 * `heartbeatTimeout`, under `TestClock`.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as TestClock from "effect/TestClock"
import * as ChannelBroadcaster from "../src/ChannelBroadcaster.js"
import * as ChannelHandler from "../src/ChannelHandler.js"
import * as ChannelHistory from "../src/ChannelHistory.js"
import * as ChannelSocket from "../src/ChannelSocket.js"
import type { Frame } from "../src/protocol/Message.js"
import type { Listener, Opened } from "../src/transport/Transport.js"

const topic = "rooms:1"
const limit = 10_000

const TestLayer = ChannelHandler.layer({ join: (conn) => Effect.succeed(conn.allowJoin()) }).pipe(
  Layer.provideMerge(ChannelBroadcaster.layerLocal),
  Layer.provide(Layer.orDie(ChannelHistory.layer({ "rooms:*": { size: 100, ttl: "1 minute" } })))
)

/** A client on a transport whose unsent bytes only grow until `take` empties them. */
const client = (socket: ChannelSocket.ChannelSocket) =>
  Effect.gen(function*() {
    const frames: Array<string> = []
    let unsent = 0
    let aborted = false
    let closed = false
    let listener: Listener | undefined
    const send = (frame: Frame) => {
      frames.push(String(frame))
      unsent += String(frame).length
    }
    const opened: Opened = {
      transport: {
        send,
        sendAll: (all) => all.forEach(send),
        bufferedAmount: () => unsent,
        close: () => {
          closed = true
          listener?.onClose()
        },
        abort: () => {
          aborted = true
          listener?.onClose()
        }
      },
      listen: (connectionListener) => Effect.sync(() => {
        listener = connectionListener
      })
    }
    const scope = yield* Scope.make()
    const accepted = yield* socket.accept(
      { transport: "test", url: "/socket/websocket?vsn=2.0.0", headers: {}, remoteAddress: Option.none(), authToken: Option.none() },
      () => Effect.succeed(opened),
      scope
    )
    yield* Effect.forkScoped(Effect.ensuring(accepted.run, Scope.close(scope, Exit.void)))
    return {
      frames,
      send: (message: ReadonlyArray<unknown>) => Effect.sync(() => listener!.onFrame(JSON.stringify(message))),
      take: () => {
        unsent = 0
      },
      get aborted() {
        return aborted
      },
      get closed() {
        return closed
      }
    }
  })

const seqs = (frames: ReadonlyArray<string>) =>
  frames.map((frame) => JSON.parse(frame) as Array<unknown>).filter((message) => message[3] === "seq")

describe("a replay larger than outboundBufferLimit", () => {
  it.scoped("goes out in turns as the client takes them; a client that stops taking is dropped after heartbeatTimeout", () =>
    Effect.gen(function*() {
      const socket = yield* ChannelSocket.make({ outboundBufferLimit: limit, heartbeatTimeout: "5 seconds" })
      const broadcaster = yield* ChannelBroadcaster.ChannelBroadcaster
      const probe = yield* client(socket)
      yield* probe.send(["1", "1", topic, "phx_join", {}])
      yield* TestClock.adjust("1 millis")
      const reply = JSON.parse(probe.frames[0]!) as [null, string, string, string, { response: { _position: string } }]
      const epoch = reply[4].response._position.split(":")[0]
      yield* probe.send([null, "2", topic, "phx_leave", {}])
      // 100 broadcasts of 1 KB: ten times the bound.
      const data = "x".repeat(1000)
      for (let n = 1; n <= 100; n++) yield* broadcaster.broadcast(topic, "seq", { n, data })

      const slow = yield* client(socket)
      yield* slow.send(["1", "1", topic, "phx_join", { _position: `${epoch}:0` }])
      yield* TestClock.adjust("1 millis")
      // The reply and a first turn, within the bound.
      const first = seqs(slow.frames).length
      expect(first).toBeGreaterThan(0)
      expect(first).toBeLessThan(10)
      // Taken: the next turn follows, and so on, for as long as the client takes them.
      for (let turn = 0; turn < 3; turn++) {
        slow.take()
        yield* TestClock.adjust("10 millis")
      }
      const taken = seqs(slow.frames).length
      expect(taken).toBeGreaterThan(first * 3)
      expect(taken).toBeLessThan(100)
      // Then nothing more is taken (its heartbeats still come): still connected, holding one
      // turn, until heartbeatTimeout.
      for (let second = 0; second < 4; second++) {
        yield* slow.send([null, `h${second}`, "phoenix", "heartbeat", {}])
        yield* TestClock.adjust("1 second")
      }
      expect(slow.aborted).toBe(false)
      expect(seqs(slow.frames).length).toBeLessThanOrEqual(taken + 10)
      yield* slow.send([null, "h4", "phoenix", "heartbeat", {}])
      yield* TestClock.adjust("1500 millis")
      expect(slow.aborted).toBe(true)
      expect(slow.closed).toBe(false)
      expect(seqs(slow.frames).length).toBeLessThan(100)
      // Every broadcast written came once, in order.
      expect(seqs(slow.frames).map((message) => (message[4] as { n: number }).n)).toEqual(
        Array.from({ length: seqs(slow.frames).length }, (_, i) => i + 1)
      )
    }).pipe(Effect.provide(TestLayer)))
})
