/**
 * Phoenix clients as channel members, and waiting without fixed sleeps.
 */
import * as Effect from "effect/Effect"
import type { Channel } from "phoenix"
import type { TestNode } from "./node.js"
import * as Client from "./phoenixClient.js"

/** A client on `node` joined to `topic`, recording what it receives; it does not reconnect by itself. */
export const member = (node: { readonly socketUrl: string }, topic: string, params: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const socket = yield* Client.socket(node.socketUrl, { params, reconnectAfterMs: () => 60_000, rejoinAfterMs: () => 60_000 })
    const [channel] = yield* Client.join(socket, topic)
    const seen = Client.record(channel)
    return { socket, channel, seen }
  })

export type Member = Effect.Effect.Success<ReturnType<typeof member>>

export const shouts = (seen: ReadonlyArray<{ readonly event: string; readonly payload: unknown }>) =>
  seen.filter(({ event }) => event === "shout").map(({ payload }) => payload)

/** Waits until `check` holds, polling every 20 ms, up to `timeout`. */
export const eventually = (check: () => boolean, what: string, timeout = 5000) =>
  until(Effect.sync(check), (ok) => ok, what, timeout)

/** Runs `effect` every 20 ms until its result satisfies `check`, up to `timeout`; failures count as not yet. */
export const until = <A, E>(effect: Effect.Effect<A, E>, check: (a: A) => boolean, what: string, timeout = 5000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeout
    while (true) {
      const result = yield* Effect.option(effect)
      if (result._tag === "Some" && check(result.value)) return result.value
      if (Date.now() > deadline) return yield* Effect.dieMessage(`timed out waiting for ${what}`)
      yield* Effect.sleep("20 millis")
    }
  })

export const leave = (channel: Channel) =>
  Effect.async<void>((resume) => {
    channel.leave().receive("ok", () => resume(Effect.void)).receive("timeout", () => resume(Effect.void))
  })

export type { TestNode }
