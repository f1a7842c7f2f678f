import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import type { Registration } from "../ChannelBroadcaster.js"

/**
 * The connections of this process, and one fiber that closes those whose
 * heartbeat deadline has passed: a silent connection costs no timer of its
 * own. The sweep runs every quarter of the shortest heartbeat timeout (at
 * least every second), so a connection is closed at most that late.
 *
 * @internal
 */
export const make = Effect.gen(function*() {
  const registrations = new Set<Registration>()
  let wakeSweeper: (() => void) | undefined

  const interval = () => {
    let shortest = Infinity
    for (const registration of registrations) shortest = Math.min(shortest, registration.heartbeatMillis)
    return Math.min(1000, Math.max(10, Math.floor(shortest / 4)))
  }

  const sweeper = Effect.gen(function*() {
    while (true) {
      if (registrations.size === 0) {
        yield* Effect.async<void>((resume) => {
          wakeSweeper = () => resume(Effect.void)
          return Effect.sync(() => {
            wakeSweeper = undefined
          })
        })
        wakeSweeper = undefined
      }
      yield* Effect.sleep(interval())
      const now = yield* Clock.currentTimeMillis
      for (const registration of registrations) {
        if (registration.lastActivity() + registration.heartbeatMillis <= now) registration.expire()
      }
    }
  })
  yield* Effect.forkScoped(sweeper)

  return {
    size: () => registrations.size,
    register: (registration: Registration): Effect.Effect<void> =>
      Effect.sync(() => {
        registrations.add(registration)
        wakeSweeper?.()
      }),
    unregister: (registration: Registration): Effect.Effect<void> =>
      Effect.sync(() => {
        registrations.delete(registration)
      })
  }
})
