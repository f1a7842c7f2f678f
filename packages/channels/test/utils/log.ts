/**
 * A log of what hooks did, for tests: `Log.Default` gives each test layer its own.
 */
import * as Effect from "effect/Effect"
import * as Ref from "effect/Ref"

export class Log extends Effect.Service<Log>()("test/Log", {
  effect: Effect.map(Ref.make<ReadonlyArray<string>>([]), (ref) => ({
    add: (line: string) => Ref.update(ref, (lines) => [...lines, line]),
    lines: Ref.get(ref)
  }))
}) {}
