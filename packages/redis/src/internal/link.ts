/**
 * The connections to Redis, behind one small interface so that the broker
 * reads the same on a single server and on a Redis Cluster.
 *
 * Single server: two ioredis connections, one for commands (PUBLISH, the history scripts, the
 * heartbeat scripts) and one in subscriber mode. Redis Cluster: one ioredis
 * `Cluster`, with `shardedSubscribers` for SSUBSCRIBE/SPUBLISH (a subscriber
 * connection per master, each channel on the shard of its slot), which
 * resubscribes on its own after a reconnect or a topology change.
 *
 * Offline queues are off: while Redis is unreachable a command fails at once
 * instead of waiting in an unbounded queue, so that publishing never blocks
 * and nothing piles up.
 */
import { Cluster, Redis } from "ioredis"
import * as History from "./history.js"

/** @internal */
export interface Link {
  /** Whether a command written now would reach Redis. */
  readonly writable: () => boolean
  readonly publish: (channel: string, frame: Buffer) => Promise<unknown>
  readonly subscribe: (channel: string) => Promise<unknown>
  readonly unsubscribe: (channel: string) => Promise<unknown>
  /** Runs the heartbeat or cluster-count script (keys in one slot). */
  readonly script: (name: "heartbeat" | "count" | "goodbye", keys: Array<string>, args: Array<string>) => Promise<unknown>
  /**
   * Runs a history script (see `history.ts`), its replies' strings as
   * buffers; `PUBLISH` or `SPUBLISH` is the command that carries broadcasts.
   */
  readonly history: (name: "append" | "read", keys: Array<string>, args: Array<string | Buffer>) => Promise<unknown>
  readonly publishCommand: "PUBLISH" | "SPUBLISH"
  /** Resolves when the connections are ready, the first time. */
  readonly ready: Promise<void>
  readonly close: () => Promise<void>
}

/** @internal */
export interface Handlers {
  readonly message: (frame: Buffer) => void
  /**
   * The subscriber connection is ready (again): subscribe every channel.
   * Called on a single server only; ioredis's `Cluster` resubscribes itself.
   */
  readonly reconnected: () => void
  readonly error: (error: Error) => void
}

/** How long to wait between reconnection attempts: quickly at first, then every second. */
const retryStrategy = (times: number) => Math.min(times * 100, 1000)

// The scores of the node set are expiry times in Redis's own clock (TIME),
// so that nodes' clocks need not agree. KEYS: the node set, the counts, the
// instances (which process holds a node id, so that a second process given
// the same id is refused while the first is live). The keys live as long as
// nodes heartbeat, plus their TTL.
const now = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

const scripts = {
  heartbeat: {
    numberOfKeys: 3,
    lua: `${now}
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
local owner = redis.call('HGET', KEYS[3], ARGV[1])
if expiry and tonumber(expiry) > now and owner and owner ~= ARGV[4] then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ttl * 2) end
return 1`
  },
  count: {
    numberOfKeys: 3,
    lua: `${now}
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #gone > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  redis.call('HDEL', KEYS[2], unpack(gone))
  redis.call('HDEL', KEYS[3], unpack(gone))
end
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
local result = {}
for i, node in ipairs(live) do
  result[#result + 1] = node
  result[#result + 1] = redis.call('HGET', KEYS[2], node) or '0'
end
return result`
  },
  goodbye: {
    numberOfKeys: 3,
    lua: `
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1`
  }
} as const

type Scripted =
  & { [K in keyof typeof scripts]: (...args: Array<string>) => Promise<unknown> }
  & { [K in keyof typeof History.scripts as `${K}Buffer`]: (...args: Array<string | Buffer>) => Promise<unknown> }

// ioredis runs each by EVALSHA, and by EVAL when Redis does not have it (a restart, a SCRIPT FLUSH).
const define = (client: Redis | Cluster) => {
  for (const [name, script] of [...Object.entries(scripts), ...Object.entries(History.scripts)]) {
    client.defineCommand(name, { numberOfKeys: script.numberOfKeys, lua: script.lua })
  }
  return client as unknown as Scripted
}

const onceReady = (client: Redis | Cluster) =>
  new Promise<void>((resolve) => {
    if (client.status === "ready") resolve()
    else client.once("ready", () => resolve())
  })

const closeClient = (client: Redis | Cluster) =>
  Promise.race([
    client.quit().then(() => undefined, () => undefined),
    new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())
  ]).finally(() => client.disconnect())

/** A single Redis server at `url`. @internal */
export const standalone = (url: string, name: string, handlers: Handlers): Link => {
  const options = {
    enableOfflineQueue: false,
    autoResubscribe: false,
    maxRetriesPerRequest: 0,
    retryStrategy,
    connectionName: name
  } as const
  const commands = new Redis(url, options)
  const subscriber = new Redis(url, options)
  const scripted = define(commands)
  commands.on("error", handlers.error)
  subscriber.on("error", handlers.error)
  subscriber.on("messageBuffer", (_channel: Buffer, frame: Buffer) => handlers.message(frame))
  // Every time, the first included: topics subscribed before Redis was
  // first reached failed, and are subscribed now.
  subscriber.on("ready", handlers.reconnected)
  return {
    writable: () => commands.status === "ready",
    publish: (channel, frame) => commands.publish(channel, frame),
    subscribe: (channel) => subscriber.subscribe(channel),
    unsubscribe: (channel) => subscriber.unsubscribe(channel),
    script: (name, keys, args) => scripted[name](...keys, ...args),
    history: (name, keys, args) => scripted[`${name}Buffer`](...keys, ...args),
    publishCommand: "PUBLISH",
    ready: Promise.all([onceReady(commands), onceReady(subscriber)]).then(() => undefined),
    close: () => Promise.all([closeClient(commands), closeClient(subscriber)]).then(() => undefined)
  }
}

/** A Redis Cluster reached through `nodes`, with sharded pub/sub or not. @internal */
export const cluster = (
  nodes: ReadonlyArray<string>,
  sharded: boolean,
  name: string,
  handlers: Handlers
): Link => {
  const client = new Cluster([...nodes], {
    enableOfflineQueue: false,
    shardedSubscribers: sharded,
    clusterRetryStrategy: retryStrategy,
    clusterNodeRetryStrategy: retryStrategy,
    retryDelayOnClusterDown: 100,
    retryDelayOnFailover: 100,
    redisOptions: { connectionName: name, maxRetriesPerRequest: 0, autoResubscribe: true }
  })
  const scripted = define(client)
  client.on("error", handlers.error)
  client.on("node error", handlers.error)
  // ioredis connects to a master on its first command, and a command that
  // meets a connection still opening is retried after the ones behind it:
  // publishes would be reordered. So a node publishes only while every
  // master's connection is open, and opens those that are not.
  const mastersOpen = () => {
    let open = true
    for (const node of client.nodes("master")) {
      if (node.status === "ready") continue
      open = false
      if (node.status === "wait") node.connect().catch(ignore)
    }
    return open
  }
  // A classic PUBLISH has no key, and ioredis sends each to a random master:
  // two in a row could take two connections and arrive out of order. So one
  // open master connection carries them all, while it stays open.
  let publisher: Redis | undefined
  const classicPublisher = () => {
    if (publisher?.status !== "ready") publisher = client.nodes("master").find((node) => node.status === "ready")
    return publisher
  }
  const ready = onceReady(client).then(() =>
    Promise.all(client.nodes("master").map((node) => node.ping().catch(ignore))).then(() => undefined)
  )
  client.on(sharded ? "smessageBuffer" : "messageBuffer", (_channel: Buffer, frame: Buffer) => handlers.message(frame))
  return {
    writable: () => client.status === "ready" && (sharded ? mastersOpen() : classicPublisher() !== undefined),
    publish: sharded
      ? (channel, frame) => client.spublish(channel, frame)
      : (channel, frame) => {
        const node = classicPublisher()
        return node === undefined ? Promise.reject(new Error("no master connection open")) : node.publish(channel, frame)
      },
    subscribe: sharded ? (channel) => client.ssubscribe(channel) : (channel) => client.subscribe(channel),
    unsubscribe: sharded ? (channel) => client.sunsubscribe(channel) : (channel) => client.unsubscribe(channel),
    script: (name, keys, args) => scripted[name](...keys, ...args),
    history: (name, keys, args) => scripted[`${name}Buffer`](...keys, ...args),
    publishCommand: sharded ? "SPUBLISH" : "PUBLISH",
    ready,
    close: () => closeClient(client)
  }
}

const ignore = () => {}
