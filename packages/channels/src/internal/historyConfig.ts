import * as Duration from "effect/Duration"
import type { Config, Resolved, TopicOptions } from "../ChannelHistory.js"
import { matches } from "../ChannelRouter.js"

const maxSize = 100_000
const defaultPositionTtl = 24 * 60 * 60 * 1000

/** @internal */
export const none: Config = { of: () => undefined, enabled: false }

/**
 * The histories of `topics`, or the problems with them.
 *
 * @internal
 */
export const resolve = (
  topics: Readonly<Record<string, TopicOptions>>,
  positionTtl: Duration.Duration | undefined
): Config | Array<string> => {
  const problems: Array<string> = []
  const patterns = Object.entries(topics)
  let longest = 0
  const table: Array<Resolved> = []
  for (const [pattern, options] of patterns) {
    const { size } = options
    if (!Number.isInteger(size) || size < 1 || size > maxSize) {
      problems.push(`${pattern}: size must be an integer from 1 to ${maxSize}, not ${String(size)}`)
    }
    const ttl = Duration.decodeUnknown(options.ttl)
    const ttlMillis = ttl._tag === "Some" ? Duration.toMillis(ttl.value) : Number.NaN
    if (!(ttlMillis >= 1 && Number.isFinite(ttlMillis))) {
      problems.push(`${pattern}: ttl must be a finite duration of at least 1 ms`)
    }
    longest = Math.max(longest, ttlMillis || 0)
    table.push({ pattern, size, ttlMillis, positionTtlMillis: 0 })
  }
  const positionTtlMillis = positionTtl === undefined ? Math.max(defaultPositionTtl, longest) : Duration.toMillis(positionTtl)
  if (!(positionTtlMillis >= longest && Number.isFinite(positionTtlMillis))) {
    problems.push(`positionTtl must be finite and at least the longest ttl`)
  }
  if (problems.length > 0) return problems
  if (table.length === 0) return none
  const resolved = table.map((entry) => ({ ...entry, positionTtlMillis }))
  const cache = new Map<string, Resolved | undefined>()
  return {
    enabled: true,
    of: (topic) => {
      if (cache.has(topic)) return cache.get(topic)
      const found = resolved.find((entry) => matches(entry.pattern, topic))
      // Bounded: a cache of what many distinct topics matched would grow without end.
      if (cache.size < 10_000) cache.set(topic, found)
      return found
    }
  }
}
