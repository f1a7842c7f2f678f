/**
 * Long-poll clients: the official `phoenix` client on its `LongPoll`
 * transport, and a raw one speaking the endpoint's HTTP, for tests that check
 * the wire. Node 20 has `fetch` and `AbortController`, which the phoenix
 * client's `Ajax` uses when there is no `XMLHttpRequest`: nothing to add.
 */
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import type * as Scope from "effect/Scope"
import { LongPoll, Socket } from "phoenix"
import type { ClientOptions } from "./phoenixClient.js"
import type { RawClient, V2 } from "./rawClient.js"

const base64ToBuffer = (text: string): ArrayBuffer => {
  const bytes = Uint8Array.from(atob(text), (char) => char.charCodeAt(0))
  return bytes.buffer
}

/**
 * The phoenix client's `LongPoll`, reading the base64 lines the server sends
 * for binary messages as bytes. The client (1.8) hands every long-poll
 * message to the JSON decoder; a binary push would fail to parse.
 */
export class BinaryLongPoll extends (LongPoll as unknown as new(endPoint: string, protocols?: unknown) => object) {
  private handler: (event: { data: unknown }) => void = () => {}
  set onmessage(handler: (event: { data: unknown }) => void) {
    this.handler = handler
  }
  get onmessage(): (event: { data: unknown }) => void {
    return (event) =>
      this.handler(
        typeof event.data === "string" && !event.data.startsWith("[") ? { data: base64ToBuffer(event.data) } : event
      )
  }
}

/** A connected phoenix `Socket` on long-poll, disconnected with the scope. */
export const socket = (url: string, options: ClientOptions = {}): Effect.Effect<Socket, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = new Socket(url, { transport: BinaryLongPoll as never, ...options })
      socket.connect()
      return socket
    }),
    (socket) => Effect.sync(() => socket.disconnect())
  )

export interface Answer {
  readonly status: number
  readonly token?: string
  readonly messages?: ReadonlyArray<string>
  readonly handled?: number
}

/** One request to the endpoint: its JSON body (every answer is HTTP 200). */
export const request = (
  url: string,
  init: { readonly method?: string; readonly headers?: Record<string, string>; readonly body?: string } = {}
): Effect.Effect<Answer> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, { ...init, signal })
      if (response.status !== 200) throw new Error(`HTTP ${response.status}`)
      return (await response.json()) as Answer
    },
    catch: (error) => error
  }).pipe(Effect.orDie)

export interface RawLongPollClient extends Omit<RawClient, "ws" | "closed" | "kind"> {
  readonly token: string
  /** The endpoint URL with the session token. */
  readonly url: string
  /** Resolves when a poll is answered 410: the session is gone. */
  readonly gone: Effect.Effect<void>
  /** Stops polling (the session then ends after 1.5 windows). */
  readonly abandon: Effect.Effect<void>
}

export class Refused extends Error {
  constructor(readonly status: number) {
    super(`refused with ${status}`)
  }
}

/**
 * Opens a session at `<baseUrl>/longpoll?<query>` (an `http://` base) and
 * polls it until the scope closes; `send` POSTs one ndjson line.
 */
export const connect = (
  baseUrl: string,
  options: { readonly query?: string; readonly headers?: Record<string, string> } = {}
): Effect.Effect<RawLongPollClient, Refused, Scope.Scope> =>
  Effect.gen(function*() {
    const endpoint = `${baseUrl}/longpoll?${options.query ?? "vsn=2.0.0"}`
    const opened = yield* request(endpoint, { headers: options.headers ?? {} })
    if (opened.status !== 410 || opened.token === undefined) return yield* Effect.fail(new Refused(opened.status))
    const token = opened.token
    const url = `${endpoint}&token=${encodeURIComponent(token)}`
    const frames: Array<V2 | Uint8Array> = []
    const all: Array<V2> = []
    const waiters = new Set<() => void>()
    let isGone = false
    const wake = () => {
      for (const waiter of waiters) waiter()
    }
    const pollLoop = Effect.gen(function*() {
      while (true) {
        const answer = yield* request(url)
        if (answer.status === 410) {
          isGone = true
          wake()
          return
        }
        for (const message of answer.messages ?? []) {
          if (message.startsWith("[") || message.startsWith("{")) {
            const parsed = JSON.parse(message) as V2
            frames.push(parsed)
            all.push(parsed)
          } else {
            frames.push(Uint8Array.from(atob(message), (char) => char.charCodeAt(0)))
          }
        }
        wake()
      }
    })
    const poller = yield* Effect.forkScoped(pollLoop)
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
    const toLine = (message: V2 | string | Uint8Array) => {
      if (message instanceof Uint8Array) {
        let binary = ""
        for (const byte of message) binary += String.fromCharCode(byte)
        return btoa(binary)
      }
      return typeof message === "string" ? message : JSON.stringify(message)
    }
    let heartbeats = 0
    const client: RawLongPollClient = {
      token,
      url,
      send: (message) =>
        Effect.asVoid(request(url, {
          method: "POST",
          headers: { "content-type": "application/x-ndjson" },
          body: toLine(message)
        })),
      next: (predicate = () => true, timeout = 3000) =>
        take(() => {
          const index = frames.findIndex((frame) => !(frame instanceof Uint8Array) && predicate(frame))
          return index === -1 ? undefined : frames.splice(0, index + 1)[index] as V2
        }, timeout, "a message"),
      nextBinary: (timeout = 3000) =>
        take(() => {
          const index = frames.findIndex((frame) => frame instanceof Uint8Array)
          return index === -1 ? undefined : frames.splice(0, index + 1)[index] as Uint8Array
        }, timeout, "a binary message"),
      received: () => all,
      gone: take(() => (isGone ? true : undefined), 5000, "the session to end"),
      abandon: Fiber.interrupt(poller).pipe(Effect.asVoid),
      drain: Effect.suspend(() => {
        const ref = `hb-${++heartbeats}`
        return Effect.zipRight(
          client.send([null, ref, "phoenix", "heartbeat", {}]),
          take(() => {
            const index = frames.findIndex((frame) => !(frame instanceof Uint8Array) && frame[1] === ref)
            if (index === -1) return undefined
            return frames.splice(0, index + 1).slice(0, index).filter((frame): frame is V2 => !(frame instanceof Uint8Array))
          }, 3000, "the heartbeat reply")
        )
      })
    }
    return client
  })
