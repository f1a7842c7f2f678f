/**
 * Clients that recover what they missed, as an application would with the
 * official `phoenix` client: join params as a function that gives the last
 * position seen, taken from each broadcast's `ref` and from the join reply.
 * Each connection goes through a TCP proxy of its own, which a test cuts
 * abruptly (both sockets destroyed, no close frame), as a network would.
 */
import { ChannelHistory } from "@effect-channels/core"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { Socket } from "phoenix"
import WebSocket from "ws"
import * as TcpProxy from "../../../integration/test/utils/tcpProxy.js"
import { until } from "./members.js"

/** What a recovering client saw, in order: join replies and broadcasts with their positions. */
export type Seen =
  | { readonly _tag: "Joined"; readonly recovered: boolean; readonly position: ChannelHistory.Position }
  | { readonly _tag: "Broadcast"; readonly n: number; readonly position: ChannelHistory.Position }

/** A client of one topic that reconnects, through a new proxy, to whichever node it is told. */
export interface RecoveringClient {
  readonly seen: Array<Seen>
  /** The last position the client saw: what it offers when it rejoins. */
  readonly last: () => ChannelHistory.Position | undefined
  /** Connects through a new proxy to the node on `port`, joins, and waits for the join reply. */
  readonly connect: (port: number) => Effect.Effect<void, never, Scope.Scope>
  /** Cuts the connection abruptly, and stops the socket from reconnecting by itself. */
  readonly cut: Effect.Effect<void>
  /** The broadcasts seen, by their `n`. */
  readonly ns: () => Array<number>
  /** The join replies seen. */
  readonly joins: () => Array<Extract<Seen, { readonly _tag: "Joined" }>>
}

const portOf = (url: string) => Number(new URL(url).port)

/** The port of a test node's socket URL. */
export const nodePort = (node: { readonly socketUrl: string }) => portOf(node.socketUrl)

export const recoveringClient = (topic: string): RecoveringClient => {
  const seen: Array<Seen> = []
  let position: ChannelHistory.Position | undefined
  let current: { socket: Socket; proxy: TcpProxy.TcpProxy } | undefined
  // A cut connection hears nothing more, though what reached the client's
  // kernel before the cut could still be read from it.
  let connection = 0
  const broadcast = (payload: unknown, ref: unknown) => {
    const at = ChannelHistory.parse(ref)
    if (at === undefined) throw new Error(`a broadcast without a position: ${String(ref)}`)
    position = at
    seen.push({ _tag: "Broadcast", n: (payload as { n: number }).n, position: at })
  }
  const joins = () => seen.flatMap((entry) => (entry._tag === "Joined" ? [entry] : []))
  return {
    seen,
    joins,
    last: () => position,
    ns: () => seen.flatMap((entry) => (entry._tag === "Broadcast" ? [entry.n] : [])),
    connect: (port) =>
      Effect.gen(function*() {
        const through = yield* TcpProxy.start(port)
        const socket = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const socket = new Socket(`ws://127.0.0.1:${through.port}/socket`, {
              transport: WebSocket,
              reconnectAfterMs: () => 60_000
            })
            socket.connect()
            return socket
          }),
          (socket) => Effect.sync(() => socket.disconnect())
        )
        current = { socket, proxy: through }
        const live = ++connection
        const channel = socket.channel(topic, () => (position === undefined ? {} : { _position: ChannelHistory.format(position) }))
        // The client calls `on` callbacks with the message's `ref` too, which @types/phoenix leaves out.
        channel.on("shout", ((payload: unknown, ref: unknown) => {
          if (live === connection) broadcast(payload, ref)
        }) as (payload?: unknown) => void)
        const before = joins().length
        // Every join reply, the rejoins after a resync included.
        channel.join().receive("ok", (reply: Record<string, unknown>) => {
          if (live !== connection) return
          const at = ChannelHistory.parse(reply[ChannelHistory.positionField])
          if (at === undefined) throw new Error(`a join reply without a position: ${JSON.stringify(reply)}`)
          position = at
          seen.push({ _tag: "Joined", recovered: reply[ChannelHistory.recoveredField] === true, position: at })
        })
        yield* until(Effect.sync(() => joins().length), (count) => count > before, `the join of ${topic}`, 5000)
      }),
    cut: Effect.suspend(() => {
      if (current === undefined) return Effect.void
      const { proxy, socket } = current
      connection++
      current = undefined
      return Effect.zipRight(proxy.cut, Effect.sync(() => socket.disconnect()))
    })
  }
}

/** Waits until the client has seen `count` broadcasts (or more, with `atLeast`). */
export const received = (client: RecoveringClient, count: number, options: { readonly atLeast?: boolean; readonly timeout?: number } = {}) =>
  until(
    Effect.sync(() => client.ns().length),
    (n) => (options.atLeast === true ? n >= count : n === count),
    `${count} broadcasts`,
    options.timeout ?? 5000
  )

/**
 * Checks what a client saw against the topic's broadcasts (`truth[k - 1]` at
 * offset `k`): after each join reply, the broadcasts from the reply's
 * position on, each once, in order. The problems found, none if it holds.
 */
export const check = (seen: ReadonlyArray<Seen>, truth: ReadonlyArray<number>): Array<string> => {
  const problems: Array<string> = []
  let next: ChannelHistory.Position | undefined
  for (const entry of seen) {
    if (entry._tag === "Joined") {
      if (entry.recovered && next !== undefined && entry.position.offset !== next.offset - 1) {
        problems.push(`recovered from ${entry.position.offset}, had ${next.offset - 1}`)
      }
      next = { epoch: entry.position.epoch, offset: entry.position.offset + 1 }
      continue
    }
    if (next === undefined || entry.position.epoch !== next.epoch || entry.position.offset !== next.offset) {
      problems.push(`broadcast at ${ChannelHistory.format(entry.position)}, expected ${next?.offset}`)
    } else if (truth[entry.position.offset - 1] !== entry.n) {
      problems.push(`broadcast ${entry.n} at ${entry.position.offset}, the topic's is ${truth[entry.position.offset - 1]}`)
    }
    next = { epoch: entry.position.epoch, offset: entry.position.offset + 1 }
  }
  return problems
}
