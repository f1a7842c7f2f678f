/**
 * Raw HTTP upgrade attempts, to see how the server answers one it refuses:
 * the status and the body, or 101 when it upgrades.
 */
import * as Effect from "effect/Effect"
import { request } from "node:http"

export interface UpgradeAttempt {
  readonly port: number
  /** Default `/socket/websocket?vsn=2.0.0`. */
  readonly path?: string
  /** Default `GET`. */
  readonly method?: string
  readonly headers?: Record<string, string>
  /** Default 2000 ms. */
  readonly timeout?: number
}

export interface UpgradeAnswer {
  readonly status: number
  readonly body: string
}

export const attemptUpgrade = (attempt: UpgradeAttempt): Effect.Effect<UpgradeAnswer> =>
  Effect.async<UpgradeAnswer>((resume) => {
    const req = request({
      // A connection of its own, as a WebSocket client opens: never one reused from a pool.
      agent: false,
      host: "127.0.0.1",
      port: attempt.port,
      path: attempt.path ?? "/socket/websocket?vsn=2.0.0",
      method: attempt.method ?? "GET",
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        ...attempt.headers
      }
    })
    const timer = setTimeout(() => {
      req.destroy()
      resume(Effect.dieMessage(`no answer to the upgrade request in ${attempt.timeout ?? 2000} ms`))
    }, attempt.timeout ?? 2000)
    const done = (answer: UpgradeAnswer) => {
      clearTimeout(timer)
      resume(Effect.succeed(answer))
    }
    req.on("response", (res) => {
      const chunks: Array<Buffer> = []
      res.on("data", (chunk: Buffer) => chunks.push(chunk))
      res.on("end", () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
      res.on("error", () => done({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
    })
    req.on("upgrade", (_res, socket) => {
      socket.destroy()
      done({ status: 101, body: "" })
    })
    req.on("error", (error) => {
      clearTimeout(timer)
      resume(Effect.dieMessage(`upgrade request failed: ${error.message}`))
    })
    req.end()
    return Effect.sync(() => {
      clearTimeout(timer)
      req.destroy()
    })
  })
