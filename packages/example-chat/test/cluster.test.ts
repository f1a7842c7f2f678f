/**
 * Two chat nodes on the Redis at 127.0.0.1:6379 (a prefix of the test's
 * own) are one chat: a member's message and `PUT /broadcast` on either node
 * reach the members of both, and each member's online list (the official
 * client's `Presence`) shows the members of both. The lobby's history is
 * in Redis: a member that comes back on the other node gets what it missed.
 */
import { RecoverableChannel } from "@effect-channels/client"
import * as HttpServer from "@effect/platform/HttpServer"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { Presence, Socket } from "phoenix"
import WebSocket from "ws"
import * as ChatServer from "../src/ChatServer.js"

const startNode = (redisPrefix: string) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      ChatServer.layer({ host: "127.0.0.1", port: 0, redisUrl: "redis://127.0.0.1:6379", redisPrefix })
    ).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return address.port
  })

/** A member of the lobby on `port`, recording its `new:msg` payloads. */
const member = (port: number, user: string) =>
  Effect.acquireRelease(
    Effect.async<{
      socket: Socket
      push: (body: string) => void
      messages: Array<unknown>
      refs: Array<unknown>
      online: () => ReadonlyArray<string>
    }>((resume) => {
      const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, reconnectAfterMs: () => 60_000 })
      socket.connect()
      const channel = socket.channel("rooms:lobby", { user })
      const messages: Array<unknown> = []
      const refs: Array<unknown> = []
      channel.on("new:msg", (payload: unknown, ref?: unknown) => {
        messages.push(payload)
        refs.push(ref)
      })
      const presence = new Presence(channel)
      const online = () => presence.list((name) => name).sort()
      channel.join().receive("ok", () =>
        resume(Effect.succeed({ socket, messages, refs, online, push: (body) => channel.push("new:msg", { user, body }) })))
    }),
    ({ socket }) => Effect.sync(() => socket.disconnect())
  )

/** A member back on `port` from `position`, with `@effect-channels/client`: what its join said, and its messages. */
const returning = (port: number, user: string, position: string) =>
  Effect.acquireRelease(
    Effect.async<{ socket: Socket; joined: RecoverableChannel.Joined | undefined; messages: Array<unknown> }>((resume) => {
      const socket = new Socket(`ws://127.0.0.1:${port}/socket`, { transport: WebSocket, reconnectAfterMs: () => 60_000 })
      socket.connect()
      const lobby = RecoverableChannel.make(socket, "rooms:lobby", { user, rejoin: true }, { position })
      const messages: Array<unknown> = []
      lobby.channel.on("new:msg", (payload: unknown) => {
        messages.push(payload)
      })
      lobby.channel.join().receive("ok", () => resume(Effect.succeed({ socket, joined: lobby.joined, messages })))
    }),
    ({ socket }) => Effect.sync(() => socket.disconnect())
  )

const eventually = (check: () => boolean, what: string) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 5000
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

describe("the chat on Redis", () => {
  it.scopedLive("two nodes are one chat: messages, presence and PUT /broadcast reach the members of both; one back on the other node recovers", () =>
    Effect.gen(function*() {
      const prefix = `chat-test-${process.pid}-${Date.now().toString(36)}`
      const one = yield* startNode(prefix)
      const two = yield* startNode(prefix)
      const ada = yield* member(one, "ada")
      const bob = yield* member(two, "bob")
      yield* eventually(
        () => ada.online().join() === "ada,bob" && bob.online().join() === "ada,bob",
        "each node's member online on the other's list"
      )
      ada.push("hello from one")
      yield* eventually(() => bob.messages.length === 1, "ada's message on two")
      expect(bob.messages).toEqual([{ user: "ada", body: "hello from one" }])

      const response = yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${two}/broadcast`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ user: "ops", body: "to all" })
        }).then((r) => r.json() as Promise<{ connected: number; clusterConnected: number | null }>)
      )
      // This node's count, and the cluster's as of the nodes' last heartbeats.
      expect(response.connected).toBe(1)
      expect(typeof response.clusterConnected).toBe("number")
      yield* eventually(() => ada.messages.length === 2 && bob.messages.length === 2, "the PUT on both nodes")
      expect(ada.messages[1]).toEqual({ user: "ops", body: "to all" })
      expect(bob.messages[1]).toEqual({ user: "ops", body: "to all" })
      // One history for the chat: the same positions on both nodes.
      expect(ada.refs).toEqual(bob.refs)

      // Bob goes; what is posted meanwhile (stored in Redis once Ada has it) he gets back on the other node.
      bob.socket.disconnect()
      yield* Effect.promise(() =>
        fetch(`http://127.0.0.1:${one}/broadcast`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ user: "ops", body: "while bob was away" })
        })
      )
      yield* eventually(() => ada.messages.length === 3, "the message on one")
      const back = yield* returning(one, "bob", String(bob.refs[1]))
      expect(back.joined?.recovered).toBe(true)
      yield* eventually(() => back.messages.length === 1, "the missed message replayed to bob on one")
      expect(back.messages).toEqual([{ user: "ops", body: "while bob was away" }])
    }))
})
