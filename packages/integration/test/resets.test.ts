/**
 * 1,000 connections, half of them reset (TCP RST) in the middle of a burst
 * of broadcasts: the other half receive every broadcast, in order; each reset
 * connection's `leave` and `disconnect` run once; nothing is left behind;
 * nothing is logged as an error.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import * as Logger from "effect/Logger"
import type { Socket } from "node:net"
import WebSocket from "ws"
import { eventually } from "./utils/rawClient.js"
import { startServer } from "./utils/server.js"

const connections = 1000
const broadcasts = 200

interface Client {
  readonly ws: WebSocket
  readonly seen: Array<number>
}

const joinAll = (socketUrl: string) =>
  Effect.acquireRelease(
    Effect.promise(async () => {
      const clients: Array<Client> = []
      for (let batch = 0; batch < connections; batch += 100) {
        await Promise.all(Array.from({ length: 100 }, () =>
          new Promise<void>((resolve, reject) => {
            const ws = new WebSocket(`${socketUrl}/websocket?vsn=2.0.0`)
            const client: Client = { ws, seen: [] }
            clients.push(client)
            ws.on("error", () => {})
            ws.once("unexpected-response", () => reject(new Error("upgrade refused")))
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

describe("resets", () => {
  it.scopedLive("1,000 connections, 500 reset mid-broadcast: the others get all 200 broadcasts in order, hooks run once each", () =>
    Effect.gen(function*() {
      const log = { leave: 0, disconnect: 0 }
      const errors: Array<string> = []
      const handler = ChannelHandler.layer({
        join: (conn) => Effect.succeed(conn.allowJoin()),
        leave: () => Effect.sync(() => log.leave++),
        disconnect: () => Effect.sync(() => log.disconnect++)
      })
      const recorder = Logger.make(({ logLevel, message }) => {
        if (logLevel._tag === "Error" || logLevel._tag === "Fatal") errors.push(String(message))
      })
      const server = yield* startServer(handler).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, recorder)))
      const clients = yield* joinAll(server.socketUrl)
      const [reset, kept] = [clients.slice(0, connections / 2), clients.slice(connections / 2)]
      const data = "x".repeat(1024)
      for (let n = 0; n < broadcasts; n++) {
        yield* server.broadcaster.broadcast("room:fan", "seq", { n, data })
        if (n === broadcasts / 4) {
          // While the broadcasts are being written: an RST each, no close frame.
          for (const { ws } of reset) (ws as unknown as { _socket: Socket })._socket.resetAndDestroy()
        }
      }
      yield* eventually(
        Effect.sync(() => kept.filter(({ seen }) => seen.length === broadcasts).length),
        (done) => done === kept.length,
        30_000
      )
      const inOrder = Array.from({ length: broadcasts }, (_, i) => i)
      for (const { seen } of kept) expect(seen).toEqual(inOrder)
      yield* eventually(server.broadcaster.connected, (n) => n === kept.length, 10_000)
      expect(yield* server.broker.subscribers("room:fan")).toBe(kept.length)
      expect(log).toEqual({ leave: reset.length, disconnect: reset.length })
      for (const { ws } of kept) ws.terminate()
      yield* eventually(server.broadcaster.connected, (n) => n === 0, 10_000)
      expect(yield* server.broker.subscribers("room:fan")).toBe(0)
      expect(log).toEqual({ leave: connections, disconnect: connections })
      expect(errors).toEqual([])
    }), 90_000)
})
