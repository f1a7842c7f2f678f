/**
 * A presence node in a process of its own, for the tests that kill it: its
 * options come as JSON in argv[2]; it prints `READY <socket url>` once it
 * serves, then runs until killed.
 */
import * as Effect from "effect/Effect"
import { type NodeOptions, serve } from "./presenceNode.js"

const options = JSON.parse(process.argv[2] ?? "{}") as NodeOptions

Effect.runFork(Effect.scoped(Effect.gen(function*() {
  const socketUrl = yield* serve(options, yield* Effect.scope)
  process.stdout.write(`READY ${socketUrl}\n`)
  return yield* Effect.never
})).pipe(Effect.tapErrorCause(Effect.logError)))
