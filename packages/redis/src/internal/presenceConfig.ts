import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { Options } from "../RedisPresence.js"

/** @internal */
export interface Resolved {
  readonly url: string
  readonly prefix: string
  readonly nodeId: string
  readonly downAfter: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  readonly connectTimeout: Duration.Duration
}

const randomId = () => {
  const bytes = new Uint8Array(9)
  globalThis.crypto.getRandomValues(bytes)
  return Buffer.from(bytes).toString("base64url")
}

const isRedisUrl = (url: string) => {
  try {
    const parsed = new URL(url)
    return (parsed.protocol === "redis:" || parsed.protocol === "rediss:") && parsed.hostname !== ""
  } catch {
    return false
  }
}

const duration = (
  problems: Array<string>,
  name: string,
  input: Duration.DurationInput | undefined,
  fallback: Duration.DurationInput
) => {
  const decoded = Duration.decodeUnknown(input ?? fallback)
  if (decoded._tag === "None" || !Duration.isFinite(decoded.value) || Duration.toMillis(decoded.value) <= 0) {
    problems.push(`${name} must be a positive, finite duration`)
    return Duration.decode(fallback)
  }
  return decoded.value
}

/** The options with their defaults, or every problem with them. @internal */
export const resolve = (options: Options): Either.Either<Resolved, ReadonlyArray<string>> => {
  const problems: Array<string> = []
  const url = options.url ?? "redis://127.0.0.1:6379"
  if (!isRedisUrl(url)) problems.push(`url must be a redis:// or rediss:// URL with a host, got ${JSON.stringify(url)}`)
  const prefix = options.prefix ?? "effect-channels"
  if (prefix.length === 0 || /[\s{}]/.test(prefix)) {
    problems.push(`prefix must be non-empty, without spaces or braces, got ${JSON.stringify(prefix)}`)
  }
  const nodeId = options.nodeId ?? randomId()
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(nodeId)) {
    problems.push(`nodeId must be 1 to 64 letters, digits or _.:-, got ${JSON.stringify(nodeId)}`)
  }
  const downAfter = duration(problems, "downAfter", options.downAfter, "30 seconds")
  // Phoenix's trackers heartbeat every 1.5 s; a short down period needs several beats within it.
  const heartbeatInterval = duration(
    problems,
    "heartbeatInterval",
    options.heartbeatInterval,
    Duration.min(Duration.seconds(1.5), Duration.unsafeDivide(downAfter, 3))
  )
  if (Duration.lessThan(downAfter, Duration.times(heartbeatInterval, 2))) {
    problems.push("downAfter must be at least twice heartbeatInterval")
  }
  const connectTimeout = duration(problems, "connectTimeout", options.connectTimeout, "5 seconds")
  if (problems.length > 0) return Either.left(problems)
  return Either.right({ url, prefix, nodeId, downAfter, heartbeatInterval, connectTimeout })
}
