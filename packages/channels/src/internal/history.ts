import type * as Clock from "effect/Clock"
import type { Envelope, Recovery } from "../Broker.js"
import type { Config, Position, Resolved } from "../ChannelHistory.js"

/** A new epoch: random, so that a restarted process never reuses one. */
export const newEpoch = (): string =>
  Date.now().toString(36) + Math.random().toString(36).slice(2, 8)

/** One topic's history: its position, and its last broadcasts in a ring of `size`. */
class Log {
  readonly epoch = newEpoch()
  offset = 0
  /** When the last broadcast was appended (or the log made), in `Clock` milliseconds. */
  touched: number
  readonly ring: Array<Envelope | undefined>
  readonly times: Array<number>
  /** How many of the ring's slots hold a broadcast, the newest at `(offset - 1) % size`. */
  count = 0

  constructor(readonly options: Resolved, now: number) {
    this.touched = now
    this.ring = new Array(options.size)
    this.times = new Array(options.size)
  }

  append(envelope: Envelope, now: number): Envelope {
    const positioned = envelope.at({ epoch: this.epoch, offset: ++this.offset })
    const slot = (this.offset - 1) % this.options.size
    this.ring[slot] = positioned
    this.times[slot] = now
    if (this.count < this.options.size) this.count++
    this.touched = now
    return positioned
  }

  /** Drops the broadcasts past their time to live, oldest first. */
  expire(now: number): void {
    const { size, ttlMillis } = this.options
    while (this.count > 0) {
      const slot = (this.offset - this.count) % size
      if (now - this.times[slot]! < ttlMillis) return
      this.ring[slot] = undefined
      this.count--
    }
  }

  /** The broadcasts after `offset`, if the log still holds every one of them. */
  after(offset: number, now: number): ReadonlyArray<Envelope> | undefined {
    if (offset > this.offset) return undefined
    this.expire(now)
    const missed = this.offset - offset
    if (missed > this.count) return undefined
    const out: Array<Envelope> = []
    for (let at = offset + 1; at <= this.offset; at++) out.push(this.ring[(at - 1) % this.options.size]!)
    return out
  }
}

/**
 * The histories of one process's topics, in memory. A topic's log is made
 * by its first broadcast or recovery, and forgotten once its position has
 * outlived `positionTtl` with no broadcast or join (a sweep, every 10 s, also
 * drops the broadcasts past their time to live, so that a quiet topic does
 * not hold them).
 *
 * @internal
 */
export class Histories {
  readonly logs = new Map<string, Log>()
  constructor(readonly config: Config, readonly clock: Clock.Clock) {}

  log(topic: string, options: Resolved): Log {
    let log = this.logs.get(topic)
    if (log === undefined) {
      log = new Log(options, this.clock.unsafeCurrentTimeMillis())
      this.logs.set(topic, log)
    }
    return log
  }

  /** The envelope with its position, appended to the log of its topic, which keeps a history of `options`. */
  append(envelope: Envelope, options: Resolved): Envelope {
    return this.log(envelope.message.topic, options).append(envelope, this.clock.unsafeCurrentTimeMillis())
  }

  recover(topic: string, since: Position | undefined): Recovery | undefined {
    const options = this.config.of(topic)
    if (options === undefined) return undefined
    const log = this.log(topic, options)
    // A topic its clients join keeps its position, broadcasts or not.
    log.touched = this.clock.unsafeCurrentTimeMillis()
    const position: Position = { epoch: log.epoch, offset: log.offset }
    if (since === undefined || since.epoch !== log.epoch) return { position, missed: undefined }
    return { position, missed: log.after(since.offset, this.clock.unsafeCurrentTimeMillis()) }
  }

  /** Drops expired broadcasts, and the logs whose position outlived its time to live. */
  sweep(): void {
    const now = this.clock.unsafeCurrentTimeMillis()
    for (const [topic, log] of this.logs) {
      if (now - log.touched >= log.options.positionTtlMillis) this.logs.delete(topic)
      else log.expire(now)
    }
  }
}

