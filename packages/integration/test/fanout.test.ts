/**
 * 1,000 connections joined to one topic all receive 100 broadcasts, in order.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import WebSocket from "ws"
import { eventually } from "./utils/rawClient.js"
import type { TestServer } from "./utils/server.js"
import { startServer } from "./utils/server.js"

const Lobby = ChannelHandler.layer({
  join: (conn) => Effect.succeed(conn.allowJoin()),
  incoming: (conn, event) => conn.broadcast(event.event, event.payload)
})

const connections = 1000
const broadcasts = 100

/** Opens and joins `count` raw clients; each records the sequence numbers it receives. */
const joinAll = (socketUrl: string, count: number) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const clients: Array<{ ws: WebSocket; seen: Array<number> }> = []
      for (let batch = 0; batch < count; batch += 100) {
        await Promise.all(Array.from({ length: Math.min(100, count - batch) }, () =>
          new Promise<void>((resolve, reject) => {
            const ws = new WebSocket(`${socketUrl}/websocket?vsn=2.0.0`)
            const client = { ws, seen: [] as Array<number> }
            clients.push(client)
            ws.on("error", reject)
            ws.on("open", () => ws.send(JSON.stringify(["1", "1", "room:fan", "phx_join", {}])))
            ws.on("message", (data) => {
              const [, ref, , event, payload] = JSON.parse(String(data))
              if (ref === "1") resolve()
              else if (event === "seq") client.seen.push((payload as { n: number }).n)
            })
          })))
      }
      return clients
    }),
    (clients) => Effect.sync(() => clients.forEach(({ ws }) => ws.terminate()))
  )

const inOrder = Array.from({ length: broadcasts }, (_, i) => i)

const allReceivedInOrder = (server: TestServer, clients: ReadonlyArray<{ readonly seen: ReadonlyArray<number> }>) =>
  Effect.gen(function*() {
    yield* eventually(
      Effect.sync(() => clients.filter(({ seen }) => seen.length === broadcasts).length),
      (done) => done === connections,
      20_000
    )
    for (const { seen } of clients) expect(seen).toEqual(inOrder)
    // No connection was dropped on the way (the outbound bound is per connection).
    expect(yield* server.broadcaster.connected).toBe(connections)
    expect(yield* server.broker.subscribers("room:fan")).toBe(connections)
  })

describe("fan-out", () => {
  it.scopedLive("1,000 connections receive 100 broadcasts from the ChannelBroadcaster, in order", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Lobby)
      const clients = yield* joinAll(server.socketUrl, connections)
      expect(yield* server.broker.subscribers("room:fan")).toBe(connections)
      for (const n of inOrder) yield* server.broadcaster.broadcast("room:fan", "seq", { n })
      yield* allReceivedInOrder(server, clients)
    }), 60_000)

  it.scopedLive("1,000 connections receive 100 broadcasts pushed by one member, in order", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Lobby)
      const clients = yield* joinAll(server.socketUrl, connections)
      const sender = clients[0]!.ws
      for (const n of inOrder) sender.send(JSON.stringify(["1", String(n + 2), "room:fan", "seq", { n }]))
      yield* allReceivedInOrder(server, clients)
    }), 60_000)
})
