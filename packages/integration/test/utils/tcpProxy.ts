/**
 * A TCP proxy in front of a server, to cut clients off the way a network
 * does: both sides of every connection reset (no close frame, no FIN), and
 * every new connection reset at once, until the proxy is restored.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { createServer, connect, type Socket } from "node:net"

export interface TcpProxy {
  readonly port: number
  /** Resets both sides of every connection, and every connection made until `restore`. */
  readonly cut: Effect.Effect<void>
  /** Passes new connections through again. */
  readonly restore: Effect.Effect<void>
  /** Sends new connections to another port from now on (a server restarted elsewhere). */
  readonly retarget: (port: number) => Effect.Effect<void>
  /** How many connections it has passed through. */
  readonly passed: () => number
  /** How many connections it has reset at once, while cut. */
  readonly refused: () => number
}

const reset = (socket: Socket) => {
  if (!socket.destroyed) socket.resetAndDestroy()
}

/** A proxy on a free port of 127.0.0.1 to `127.0.0.1:target`, closed with the scope. */
export const start = (target: number): Effect.Effect<TcpProxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let port = target
    let down = false
    let passed = 0
    let refused = 0
    const open = new Set<Socket>()
    const server = createServer((client) => {
      client.on("error", () => {})
      if (down) {
        refused++
        return reset(client)
      }
      passed++
      const upstream = connect(port, "127.0.0.1")
      upstream.on("error", () => {})
      open.add(client)
      open.add(upstream)
      client.pipe(upstream)
      upstream.pipe(client)
      // A side that ends, the other ends too (a server that closes), as a proxy passes it on.
      client.once("close", () => {
        open.delete(client)
        upstream.destroy()
      })
      upstream.once("close", () => {
        open.delete(upstream)
        client.destroy()
      })
    })
    const listening = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const socket of open) socket.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return {
      port: listening,
      cut: Effect.sync(() => {
        down = true
        for (const socket of open) reset(socket)
        open.clear()
      }),
      restore: Effect.sync(() => {
        down = false
      }),
      retarget: (next) =>
        Effect.sync(() => {
          port = next
        }),
      passed: () => passed,
      refused: () => refused
    }
  })
