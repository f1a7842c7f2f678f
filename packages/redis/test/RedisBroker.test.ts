/**
 * Two and three nodes in this process on the Redis at 127.0.0.1:6379 (a
 * prefix of its own per test), official phoenix clients on each.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import { execFileSync } from "node:child_process"
import type { Socket } from "phoenix"
import { RedisBroker } from "../src/index.js"
import * as Node from "./utils/node.js"
import { eventually, leave, member, shouts } from "./utils/members.js"
import * as Client from "./utils/phoenixClient.js"

const url = "redis://127.0.0.1:6379"

/** `n` nodes on one prefix. */
const nodes = (n: number, options: RedisBroker.Options = {}) =>
  Effect.gen(function*() {
    const prefix = Node.uniquePrefix("cluster")
    return yield* Effect.all(Array.from({ length: n }, () => Node.start({ url, prefix, ...options })))
  })

const numsub = (channel: string) =>
  Number(execFileSync("redis-cli", ["-p", "6379", "pubsub", "numsub", channel], { encoding: "utf8" }).split("\n")[1])

describe("RedisBroker", () => {
  it.scopedLive("a member's push re-broadcast reaches every member on three nodes once, in order", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* nodes(3)
      const members = [
        yield* member(a!, "rooms:lobby"),
        yield* member(a!, "rooms:lobby"),
        yield* member(b!, "rooms:lobby"),
        yield* member(c!, "rooms:lobby")
      ]
      const sender = members[0]!
      for (let n = 0; n < 50; n++) sender.channel.push("shout", { n })
      const expected = Array.from({ length: 50 }, (_, n) => ({ n }))
      yield* eventually(() => members.every(({ seen }) => shouts(seen).length >= 50), "50 shouts everywhere")
      // A beat more, so that a duplicate would have arrived.
      yield* Effect.sleep("100 millis")
      for (const { seen } of members) expect(shouts(seen)).toEqual(expected)
      expect((yield* a!.node.stats).received).toBe(0)
      expect((yield* b!.node.stats).received).toBe(50)
    }))

  it.scopedLive("broadcastFrom skips the sender's connection only, on every node", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes(2)
      const sender = yield* member(a!, "rooms:from")
      const neighbour = yield* member(a!, "rooms:from")
      const remote = yield* member(b!, "rooms:from")
      yield* Client.push(sender.channel, "shout_from", { body: "hi" })
      yield* Client.push(sender.channel, "shout", { body: "all" })
      yield* eventually(() => shouts(remote.seen).length === 2 && shouts(neighbour.seen).length === 2, "both shouts")
      yield* eventually(() => shouts(sender.seen).length === 1, "the sender's own shout")
      expect(shouts(sender.seen)).toEqual([{ body: "all" }])
      expect(shouts(neighbour.seen)).toEqual([{ body: "hi" }, { body: "all" }])
      expect(shouts(remote.seen)).toEqual([{ body: "hi" }, { body: "all" }])
    }))

  it.scopedLive("a binary payload arrives byte for byte on the other node", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes(2)
      const sender = yield* member(a!, "rooms:bytes")
      const remote = yield* member(b!, "rooms:bytes")
      // Every byte value, the bytes of no valid UTF-8 included.
      const bytes = Uint8Array.from({ length: 512 }, (_, i) => (i * 7) % 256)
      yield* Client.push(sender.channel, "shout", bytes.buffer)
      yield* eventually(() => shouts(remote.seen).length === 1, "the binary shout")
      const received = shouts(remote.seen)[0]
      expect(received).toBeInstanceOf(ArrayBuffer)
      expect(Array.from(new Uint8Array(received as ArrayBuffer))).toEqual(Array.from(bytes))
    }))

  it.scopedLive("the broadcaster of any node reaches the members of every node", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* nodes(3)
      const onA = yield* member(a!, "rooms:news")
      const onB = yield* member(b!, "rooms:news")
      yield* c!.broadcaster.broadcast("rooms:news", "shout", { from: "c" })
      yield* a!.broadcaster.broadcast("rooms:news", "shout", { from: "a" })
      yield* eventually(() => shouts(onA.seen).length === 2 && shouts(onB.seen).length === 2, "two broadcasts")
      // Two senders: each one's order holds, not an order between them.
      const from = (seen: typeof onA.seen) => new Set(shouts(seen).map((payload) => (payload as { from: string }).from))
      expect(from(onA.seen)).toEqual(new Set(["a", "c"]))
      expect(from(onB.seen)).toEqual(new Set(["a", "c"]))
      // `connected` is this node's own count.
      expect(yield* a!.broadcaster.connected).toBe(1)
      expect(yield* c!.broadcaster.connected).toBe(0)
    }))

  it.scopedLive("disconnect(socketId) closes that id's connections on every node, and no other", () =>
    Effect.gen(function*() {
      const [a, b, c] = yield* nodes(3)
      const closed: Array<string> = []
      const watch = (socket: Socket, name: string) => socket.onClose(() => {
        closed.push(name)
      })
      const adaOnA = yield* member(a!, "rooms:x", { id: "user:ada" })
      const adaOnB = yield* member(b!, "rooms:x", { id: "user:ada" })
      const bob = yield* member(b!, "rooms:x", { id: "user:bob" })
      watch(adaOnA.socket, "ada@a")
      watch(adaOnB.socket, "ada@b")
      watch(bob.socket, "bob@b")
      yield* c!.broadcaster.disconnect("user:ada")
      yield* eventually(() => closed.length === 2, "ada's two connections closed")
      yield* Effect.sleep("100 millis")
      expect(closed.sort()).toEqual(["ada@a", "ada@b"])
      expect(bob.socket.isConnected()).toBe(true)
    }))

  it.scopedLive("a node subscribes a topic at Redis while it has local subscribers only", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes(2)
      const channel = `${a!.node.prefix}:rooms:served`
      expect(numsub(channel)).toBe(0)
      const first = yield* member(a!, "rooms:served")
      const second = yield* member(a!, "rooms:served")
      expect(numsub(channel)).toBe(1)
      const onB = yield* member(b!, "rooms:served")
      expect(numsub(channel)).toBe(2)
      yield* a!.broadcaster.broadcast("rooms:elsewhere", "shout", {})
      yield* Effect.sleep("100 millis")
      expect((yield* b!.node.stats).received).toBe(0)

      yield* leave(first.channel)
      expect(numsub(channel)).toBe(2)
      yield* leave(second.channel)
      yield* eventually(() => numsub(channel) === 1, "a's unsubscribe")
      expect((yield* a!.node.stats).topics).toBe(0)
      yield* leave(onB.channel)
      yield* eventually(() => numsub(channel) === 0, "b's unsubscribe")
    }))

  it.scopedLive("messages of another format or version are dropped and counted, and delivery goes on", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes(2)
      const onB = yield* member(b!, "rooms:m")
      const channel = `${b!.node.prefix}:rooms:m`
      // "garbage" starts with the byte of a version that does not exist; "" is truncated.
      execFileSync("redis-cli", ["-p", "6379", "publish", channel, "garbage"])
      execFileSync("redis-cli", ["-p", "6379", "publish", channel, ""])
      yield* a!.broadcaster.broadcast("rooms:m", "shout", { ok: true })
      yield* eventually(() => shouts(onB.seen).length === 1, "the valid broadcast")
      expect(shouts(onB.seen)).toEqual([{ ok: true }])
      expect((yield* b!.node.stats).malformed).toBe(2)
    }))

  it.scopedLive("a node id in use by a live node is refused; free again once that node stops", () =>
    Effect.gen(function*() {
      const options = { url, prefix: Node.uniquePrefix("dup"), nodeId: "same-id" }
      const first = yield* Node.start(options)
      const refused = yield* Effect.flip(Effect.scoped(Layer.build(RedisBroker.layerBroadcaster(options))))
      expect(refused._tag).toBe("RedisBrokerConfigError")
      expect(refused.message).toBe("invalid RedisBroker options: nodeId \"same-id\" is in use by another live node")
      yield* first.stop
      const again = yield* Node.start(options)
      expect(again.node.nodeId).toBe("same-id")
    }))

  it.live("bad options fail with one error listing every problem", () =>
    Effect.gen(function*() {
      const exit = yield* Effect.exit(Layer.build(RedisBroker.layer({
        url: "http://127.0.0.1:6379",
        prefix: "",
        nodeId: "has spaces",
        heartbeatInterval: "10 seconds",
        nodeTimeout: "1 second"
      })).pipe(Effect.scoped))
      expect(Exit.isFailure(exit)).toBe(true)
      if (Exit.isFailure(exit) && exit.cause._tag === "Fail") {
        const error = exit.cause.error
        expect(error._tag).toBe("RedisBrokerConfigError")
        expect(error.problems).toHaveLength(4)
        expect(error.message).toContain("url must be a redis:// or rediss:// URL")
      } else {
        expect.fail(`expected a failure, got ${String(exit)}`)
      }
    }))

  it.scopedLive("1,000 clients over 2 nodes all receive 100 broadcasts in order", () =>
    Effect.gen(function*() {
      const [a, b] = yield* nodes(2)
      const sockets: Array<{ seen: Array<number> }> = []
      for (let batch = 0; batch < 1000; batch += 100) {
        yield* Effect.all(
          Array.from({ length: 100 }, (_, i) =>
            Effect.gen(function*() {
              const node = (batch + i) % 2 === 0 ? a! : b!
              const socket = yield* Client.socket(node.socketUrl, { reconnectAfterMs: () => 60_000 })
              const [channel] = yield* Client.join(socket, "rooms:fan", {}, 20_000)
              const seen: Array<number> = []
              channel.on("seq", (payload: { n: number }) => {
                seen.push(payload.n)
              })
              sockets.push({ seen })
            })),
          { concurrency: "unbounded" }
        )
      }
      // From node a: half the clients get them through Redis.
      for (let n = 0; n < 100; n++) yield* a!.broadcaster.broadcast("rooms:fan", "seq", { n })
      yield* eventually(() => sockets.every(({ seen }) => seen.length === 100), "100 broadcasts on 1,000 clients", 30_000)
      const expected = Array.from({ length: 100 }, (_, n) => n)
      for (const { seen } of sockets) expect(seen).toEqual(expected)
      expect((yield* a!.broadcaster.connected) + (yield* b!.broadcaster.connected)).toBe(1000)
    }), 60_000)
})
