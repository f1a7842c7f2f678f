/**
 * A handler whose `connect` never answers (for the connects `hangs` picks;
 * the others are let in): `started` once one runs, `interrupted` once it is.
 */
import { ChannelHandler } from "@effect-channels/core"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"

export const hangingConnect = (hangs: (params: Readonly<Record<string, string>>) => boolean = () => true) =>
  Effect.gen(function*() {
    const started = yield* Deferred.make<void>()
    const interrupted = yield* Deferred.make<void>()
    const layer = ChannelHandler.layer({
      connect: (info) =>
        hangs(info.params)
          ? Effect.zipRight(
            Deferred.succeed(started, undefined),
            Effect.onInterrupt(Effect.never, () => Deferred.succeed(interrupted, undefined))
          )
          : Effect.succeed({}),
      join: (conn) => Effect.succeed(conn.allowJoin())
    })
    /** Fails with `what` unless the hanging connect is interrupted within `millis`. */
    const awaitInterrupted = (what: string, millis: number) =>
      Deferred.await(interrupted).pipe(Effect.timeoutFail({ duration: millis, onTimeout: () => new Error(what) }))
    return { layer, started, awaitInterrupted }
  })
