/**
 * The official `phoenix` client (with `ws` as its WebSocket) as Effects, every
 * wait bounded by a timeout.
 */
import * as Cause from "effect/Cause"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type Channel, Socket, type SocketConnectOption } from "phoenix"
import WebSocket from "ws"

export type ClientOptions = Partial<Omit<SocketConnectOption, "transport">>

/** A connected `Socket`, disconnected with the scope. */
export const socket = (url: string, options: ClientOptions = {}): Effect.Effect<Socket, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = new Socket(url, { transport: WebSocket, ...options })
      socket.connect()
      return socket
    }),
    (socket) => Effect.sync(() => socket.disconnect())
  )

/** Dies (a defect, not a failure the caller may expect) when `effect` takes longer than `timeout` ms. */
const bounded = <A, E>(effect: Effect.Effect<A, E>, what: string, timeout: number) =>
  Effect.timeoutFailCause(effect, {
    duration: timeout,
    onTimeout: () => Cause.die(new Error(`timed out waiting for ${what}`))
  })

/** Joins a topic: the join response, or fails with the refusal (the channel is then left). */
export const join = (socket: Socket, topic: string, params: object = {}, timeout = 3000) => {
  const channel = socket.channel(topic, params)
  return bounded(
    Effect.async<readonly [Channel, unknown], unknown>((resume) => {
      channel.join()
        .receive("ok", (response: unknown) => resume(Effect.succeed([channel, response] as const)))
        .receive("error", (reason: unknown) => {
          channel.leave()
          resume(Effect.fail(reason))
        })
        .receive("timeout", () => resume(Effect.dieMessage(`join of ${topic} timed out`)))
    }),
    `the join of ${topic}`,
    timeout
  )
}

/** The payload of the next `event` on the channel. */
export const next = (channel: Channel, event: string, timeout = 2000) =>
  bounded(
    Effect.async<unknown>((resume) => {
      const ref = channel.on(event, (payload: unknown) => {
        channel.off(event, ref)
        resume(Effect.succeed(payload))
      })
      return Effect.sync(() => channel.off(event, ref))
    }),
    `${event} on ${channel.topic}`,
    timeout
  )

/** Pushes and waits for the reply: its status and response. */
export const push = (channel: Channel, event: string, payload: object | ArrayBuffer, timeout = 2000) =>
  bounded(
    Effect.async<readonly ["ok" | "error", unknown]>((resume) => {
      channel.push(event, payload as object)
        .receive("ok", (response: unknown) => resume(Effect.succeed(["ok", response] as const)))
        .receive("error", (response: unknown) => resume(Effect.succeed(["error", response] as const)))
        .receive("timeout", () => resume(Effect.dieMessage(`push ${event} timed out`)))
    }),
    `the reply to ${event}`,
    timeout
  )

/** Records every event the channel receives (through its `onMessage` hook), in order. */
export const record = (channel: Channel): Array<{ readonly event: string; readonly payload: unknown }> => {
  const seen: Array<{ event: string; payload: unknown }> = []
  const onMessage = channel.onMessage.bind(channel)
  channel.onMessage = (event: string, payload: unknown, ref: unknown) => {
    seen.push({ event, payload })
    return onMessage(event, payload, ref)
  }
  return seen
}

/** Resolves when `check` holds, checked on every `tick` call and at once. */
export const until = (register: (tick: () => void) => void, check: () => boolean, what: string, timeout = 3000) =>
  bounded(
    Effect.async<void>((resume) => {
      let done = false
      const tick = () => {
        if (!done && check()) {
          done = true
          resume(Effect.void)
        }
      }
      register(tick)
      tick()
    }),
    what,
    timeout
  )
