import * as Duration from "effect/Duration"
import * as Either from "effect/Either"
import type { Options } from "../RedisBroker.js"

/** @internal */
export interface Resolved {
  readonly url: string
  readonly cluster: { readonly nodes: ReadonlyArray<string>; readonly sharded: boolean } | undefined
  readonly prefix: string
  readonly nodeId: string
  readonly maxPendingPublishes: number
  readonly connectTimeout: Duration.Duration
  readonly subscribeTimeout: Duration.Duration
  readonly heartbeatInterval: Duration.Duration
  readonly nodeTimeout: Duration.Duration
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
  if (options.cluster === undefined && !isRedisUrl(url)) {
    problems.push(`url must be a redis:// or rediss:// URL with a host, got ${JSON.stringify(url)}`)
  }
  if (options.cluster !== undefined) {
    if (options.url !== undefined) problems.push("give url or cluster, not both")
    if (options.cluster.nodes.length === 0) problems.push("cluster.nodes must list at least one node")
    for (const node of options.cluster.nodes) {
      if (!isRedisUrl(node)) problems.push(`cluster node ${JSON.stringify(node)} is not a redis:// URL`)
    }
  }
  const prefix = options.prefix ?? "effect-channels"
  if (prefix.length === 0 || /[\s{}]/.test(prefix)) {
    problems.push(`prefix must be non-empty, without spaces or braces, got ${JSON.stringify(prefix)}`)
  }
  const nodeId = options.nodeId ?? randomId()
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(nodeId)) {
    problems.push(`nodeId must be 1 to 64 letters, digits or _.:-, got ${JSON.stringify(nodeId)}`)
  }
  const maxPendingPublishes = options.maxPendingPublishes ?? 10_000
  if (!Number.isSafeInteger(maxPendingPublishes) || maxPendingPublishes < 1) {
    problems.push(`maxPendingPublishes must be a positive integer, got ${maxPendingPublishes}`)
  }
  const connectTimeout = duration(problems, "connectTimeout", options.connectTimeout, "5 seconds")
  const subscribeTimeout = duration(problems, "subscribeTimeout", options.subscribeTimeout, "2 seconds")
  const heartbeatInterval = duration(problems, "heartbeatInterval", options.heartbeatInterval, "5 seconds")
  const nodeTimeout = duration(problems, "nodeTimeout", options.nodeTimeout, "15 seconds")
  if (Duration.lessThanOrEqualTo(nodeTimeout, heartbeatInterval)) {
    problems.push("nodeTimeout must be longer than heartbeatInterval")
  }
  if (problems.length > 0) return Either.left(problems)
  return Either.right({
    url,
    cluster: options.cluster === undefined
      ? undefined
      : { nodes: options.cluster.nodes, sharded: options.cluster.sharded ?? true },
    prefix,
    nodeId,
    maxPendingPublishes,
    connectTimeout,
    subscribeTimeout,
    heartbeatInterval,
    nodeTimeout
  })
}
