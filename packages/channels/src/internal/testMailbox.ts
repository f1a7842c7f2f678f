/**
 * Messages kept until a `ChannelTest` assertion takes them.
 */
import * as Effect from "effect/Effect"

/** Messages kept until an assertion takes them, with waiters woken on arrival. */
export class Mailbox<A> {
  readonly items: Array<A> = []
  private readonly waiters = new Set<() => void>()

  add(item: A) {
    this.items.push(item)
    for (const waiter of this.waiters) waiter()
  }

  take(predicate: (item: A) => boolean): A | undefined {
    const index = this.items.findIndex(predicate)
    return index === -1 ? undefined : this.items.splice(index, 1)[0]
  }

  /** Waits for the first item satisfying the predicate and removes it. */
  await(predicate: (item: A) => boolean): Effect.Effect<A> {
    return Effect.async<A>((resume) => {
      const found = this.take(predicate)
      if (found !== undefined) return resume(Effect.succeed(found))
      const waiter = () => {
        const item = this.take(predicate)
        if (item === undefined) return
        this.waiters.delete(waiter)
        resume(Effect.succeed(item))
      }
      this.waiters.add(waiter)
      return Effect.sync(() => this.waiters.delete(waiter))
    })
  }

  /** Waits until `condition` holds, checked as each item arrives; takes nothing. */
  until(condition: () => boolean): Effect.Effect<void> {
    return Effect.async<void>((resume) => {
      if (condition()) return resume(Effect.void)
      const waiter = () => {
        if (!condition()) return
        this.waiters.delete(waiter)
        resume(Effect.void)
      }
      this.waiters.add(waiter)
      return Effect.sync(() => this.waiters.delete(waiter))
    })
  }

  describe(): string {
    return this.items.length === 0 ? "nothing" : this.items.map((item) => JSON.stringify(item, bytes)).join("\n  ")
  }
}

export const bytes = (_key: string, value: unknown) =>
  value instanceof Uint8Array ? `<${value.length} bytes: ${Array.from(value.subarray(0, 16)).join(" ")}>` : value

