/**
 * A raw WebSocket client speaking V2 frames, for tests that check the wire.
 */
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import WebSocket from "ws"
import * as LongPoll from "./longPoll.js"

export type V2 = [string | null, string | null, string, string, unknown]

export interface RawClient {
  readonly kind: "websocket" | "longpoll"
  /** The WebSocket (a long-poll client has none: reading it throws). */
  readonly ws: WebSocket
  readonly send: (message: V2 | string | Uint8Array) => Effect.Effect<void>
  /** The next frame satisfying the predicate (frames before it are skipped), within `timeout` ms. */
  readonly next: (predicate?: (message: V2) => boolean, timeout?: number) => Effect.Effect<V2>
  /** The next binary frame. */
  readonly nextBinary: (timeout?: number) => Effect.Effect<Uint8Array>
  /** Every frame received so far, parsed. */
  readonly received: () => ReadonlyArray<V2>
  readonly closed: Effect.Effect<{ readonly code: number; readonly reason: string }>
  /** Sends a heartbeat and returns the frames received until its reply (exclusive). */
  readonly drain: Effect.Effect<ReadonlyArray<V2>>
}

export interface ConnectOptions {
  readonly query?: string
  readonly headers?: Record<string, string>
  readonly protocols?: ReadonlyArray<string>
}

export class Refused extends Error {
  constructor(readonly status: number) {
    super(`refused with ${status}`)
  }
}

/**
 * A client of `baseUrl`: a WebSocket for `ws://`, a long-poll session for
 * `http://` (an auth token offered as a subprotocol then travels in the
 * `X-Phoenix-AuthToken` header, as the phoenix client sends it; it has no
 * `ws`, and `closed` is the session gone, with no close code: 0).
 */
export const connect = (
  baseUrl: string,
  options: ConnectOptions = {}
): Effect.Effect<RawClient, Refused, Scope.Scope> =>
  baseUrl.startsWith("http") ? longPoll(baseUrl, options) : websocket(baseUrl, options)

const authTokenPrefix = "base64url.bearer.phx."

const longPoll = (baseUrl: string, options: ConnectOptions): Effect.Effect<RawClient, Refused, Scope.Scope> => {
  const offered = options.protocols?.find((protocol) => protocol.startsWith(authTokenPrefix))
  const headers = { ...options.headers }
  if (offered !== undefined) {
    headers["x-phoenix-authtoken"] = Buffer.from(offered.slice(authTokenPrefix.length), "base64url").toString("utf8")
  }
  return LongPoll.connect(baseUrl, { query: options.query ?? "vsn=2.0.0", headers }).pipe(
    Effect.mapError((error) => new Refused(error.status)),
    Effect.map((client): RawClient => ({
      ...client,
      kind: "longpoll",
      get ws(): WebSocket {
        throw new Error("a long-poll client has no WebSocket")
      },
      closed: Effect.as(client.gone, { code: 0, reason: "session gone" })
    }))
  )
}

const websocket = (
  baseUrl: string,
  options: ConnectOptions = {}
): Effect.Effect<RawClient, Refused, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.async<WebSocket, Refused>((resume) => {
      const ws = new WebSocket(`${baseUrl}/websocket?${options.query ?? "vsn=2.0.0"}`, options.protocols as Array<string>, {
        headers: options.headers ?? {}
      })
      ws.once("open", () => resume(Effect.succeed(ws)))
      ws.once("unexpected-response", (_req, res) => {
        resume(Effect.fail(new Refused(res.statusCode ?? 0)))
        ws.terminate()
      })
      ws.once("error", () => {})
    }),
    (ws) => Effect.sync(() => ws.terminate())
  ).pipe(Effect.map(make))

const make = (ws: WebSocket): RawClient => {
  const frames: Array<V2 | Uint8Array> = []
  const all: Array<V2> = []
  const waiters = new Set<() => void>()
  let closeInfo: { code: number; reason: string } | undefined
  ws.on("message", (data, isBinary) => {
    if (isBinary) frames.push(new Uint8Array(data as Buffer))
    else {
      const message = JSON.parse(String(data)) as V2
      frames.push(message)
      all.push(message)
    }
    for (const waiter of waiters) waiter()
  })
  ws.on("close", (code, reason) => {
    closeInfo = { code, reason: String(reason) }
    for (const waiter of waiters) waiter()
  })
  const take = <A>(pick: () => A | undefined, timeout: number, what: string) =>
    Effect.async<A>((resume) => {
      const check = () => {
        const found = pick()
        if (found !== undefined) {
          cleanup()
          resume(Effect.succeed(found))
        }
      }
      const timer = setTimeout(() => {
        cleanup()
        resume(Effect.dieMessage(`timed out waiting for ${what}; received: ${JSON.stringify(all)}`))
      }, timeout)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
      return Effect.sync(cleanup)
    })
  let heartbeats = 0
  const client: RawClient = {
    kind: "websocket",
    ws,
    send: (message) =>
      Effect.sync(() => ws.send(typeof message === "string" || message instanceof Uint8Array ? message : JSON.stringify(message))),
    next: (predicate = () => true, timeout = 2000) =>
      take(() => {
        const index = frames.findIndex((frame) => !(frame instanceof Uint8Array) && predicate(frame))
        return index === -1 ? undefined : frames.splice(0, index + 1)[index] as V2
      }, timeout, "a frame"),
    nextBinary: (timeout = 2000) =>
      take(() => {
        const index = frames.findIndex((frame) => frame instanceof Uint8Array)
        return index === -1 ? undefined : frames.splice(0, index + 1)[index] as Uint8Array
      }, timeout, "a binary frame"),
    received: () => all,
    closed: take(() => closeInfo, 5000, "the close"),
    drain: Effect.suspend(() => {
      const ref = `hb-${++heartbeats}`
      return Effect.zipRight(
        client.send([null, ref, "phoenix", "heartbeat", {}]),
        take(() => {
          const index = frames.findIndex((frame) => !(frame instanceof Uint8Array) && frame[1] === ref)
          if (index === -1) return undefined
          return frames.splice(0, index + 1).slice(0, index).filter((frame): frame is V2 => !(frame instanceof Uint8Array))
        }, 2000, "the heartbeat reply")
      )
    })
  }
  return client
}

/**
 * The client goes away: a WebSocket closes with `code`; a long-poll client
 * stops polling, and its session ends 1.5 poll windows later.
 */
export const goAway = (client: RawClient, code = 1000): Effect.Effect<void> =>
  client.kind === "longpoll"
    ? (client as unknown as LongPoll.RawLongPollClient).abandon
    : Effect.sync(() => client.ws.close(code))

/** What `closed` gives for a close with `code` and `reason`: long-poll carries neither, its session is just gone. */
export const closedAs = (client: RawClient, code: number, reason?: string) =>
  client.kind === "longpoll" ? { code: 0, reason: "session gone" } : reason === undefined ? { code } : { code, reason }

/** Polls `effect` until `predicate` holds, for at most `timeout` ms. */
export const eventually = <A>(effect: Effect.Effect<A>, predicate: (a: A) => boolean, timeout = 3000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeout
    while (true) {
      const value = yield* effect
      if (predicate(value)) return value
      if (Date.now() > deadline) return yield* Effect.dieMessage(`condition not met in ${timeout} ms; last value: ${JSON.stringify(value)}`)
      yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 10)))
    }
  })
