/**
 * The histories of topics in Redis. Per topic, two keys:
 *
 * - `<prefix>:history-meta:<topic>`, a hash: `epoch` (random, new whenever
 *   the hash is missing, i.e. the history was lost) and `offset` (the last
 *   position given). It expires `positionTtl` after the last broadcast or
 *   recovery.
 * - `<prefix>:history:<topic>`, a stream: one entry per broadcast, id
 *   `<offset>-0`, fields `t` (Redis's time, ms) and `f` (the frame the node
 *   sent), trimmed to `size` entries; it expires `ttl` after the last
 *   broadcast, and a read skips entries older than `ttl`.
 *
 * On a Redis Cluster both keys carry the topic's channel as their hash tag
 * (`<prefix>:history:{<prefix>:<topic>}`), so that the script's keys and its
 * (S)PUBLISH share one slot.
 *
 * A broadcast gets its position from the `append` script, which stores and
 * publishes it in the same step: positions follow the order in which every
 * node receives the topic's messages.
 */
import type { Broker, ChannelHistory } from "@effect-channels/core"
import * as Codec from "./codec.js"

// Redis's clock (TIME), so that the nodes' clocks need not agree.
const now = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`

// A missing hash is a lost history: a new epoch, and no entry of the old one.
const meta = `
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'offset', 0)
end`

/** @internal */
export const scripts = {
  // KEYS: meta, stream. ARGV: a new epoch, the frame, channel, size, ttl,
  // positionTtl, publish command. The frame published is the one stored,
  // made version 2 with its position after the node id (see `codec.ts`).
  append: {
    numberOfKeys: 2,
    lua: `${now}${meta}
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
local frame = ARGV[2]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-0', 't', now, 'f', frame)
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
local head = 3 + string.byte(frame, 3)
local position = epoch .. ':' .. offset
redis.call(ARGV[7], ARGV[3], string.char(${Codec.positionedVersion}) .. string.sub(frame, 2, head) .. string.char(#position) .. position .. string.sub(frame, head + 1))
return offset`
  },
  // KEYS: meta, stream. ARGV: a new epoch, positionTtl, the epoch and offset
  // read from, the most entries to read. The entries after the offset, if
  // there are not more than that; Redis's time, to check them against `ttl`.
  read: {
    numberOfKeys: 2,
    lua: `${now}${meta}
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local top = tonumber(redis.call('HGET', KEYS[1], 'offset'))
local since = tonumber(ARGV[4])
local entries = {}
if epoch == ARGV[3] and since < top and top - since <= tonumber(ARGV[5]) then
  entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', top .. '-0')
end
return { epoch, top, now, entries }`
  }
} as const

/** The keys of a topic's history. @internal */
export const keys = (prefix: string, topic: string, cluster: boolean): Array<string> => {
  const name = cluster ? `{${prefix}:${topic}}` : topic
  return [`${prefix}:history-meta:${name}`, `${prefix}:history:${name}`]
}

/** A new epoch: random, so that a history that was lost never reuses one. @internal */
export const newEpoch = (): string => {
  const bytes = new Uint8Array(9)
  globalThis.crypto.getRandomValues(bytes)
  return Buffer.from(bytes).toString("base64url")
}

/** The arguments of `append`. @internal */
export const appendArgs = (
  frame: Buffer,
  channel: string,
  options: ChannelHistory.Resolved,
  publishCommand: string
): Array<string | Buffer> => [
  newEpoch(),
  frame,
  channel,
  String(options.size),
  String(options.ttlMillis),
  String(options.positionTtlMillis),
  publishCommand
]

/** The arguments of `read`: from `since` (none: the position only). @internal */
export const readArgs = (
  since: ChannelHistory.Position | undefined,
  options: ChannelHistory.Resolved
): Array<string> => [
  newEpoch(),
  String(options.positionTtlMillis),
  since?.epoch ?? "",
  String(since?.offset ?? 0),
  String(options.size)
]

/** What `read` found: the topic's position, and the broadcasts after `since` if every one is still there. @internal */
export interface Read {
  readonly position: ChannelHistory.Position
  /** The broadcasts from `since` on, in order, as far as they go without a gap or an expired one. */
  readonly entries: ReadonlyArray<Broker.Envelope>
  /** Whether `entries` are every broadcast after `since`. */
  readonly complete: boolean
}

const unreadable = (why: string) => new Error(`unreadable history reply: ${why}`)

/**
 * Reads the reply of `read`. Entries whose frame cannot be decoded end what
 * is read there, as a gap would.
 *
 * @internal
 */
export const parseRead = (
  reply: unknown,
  since: ChannelHistory.Position | undefined,
  options: ChannelHistory.Resolved
): Read => {
  if (!Array.isArray(reply) || reply.length !== 4) throw unreadable("not a 4-element array")
  const [epochReply, top, now, entries] = reply as [unknown, unknown, unknown, unknown]
  if (!Buffer.isBuffer(epochReply) || typeof top !== "number" || typeof now !== "number" || !Array.isArray(entries)) {
    throw unreadable("fields of the wrong type")
  }
  const position = { epoch: epochReply.toString("utf8"), offset: top }
  if (since === undefined || since.epoch !== position.epoch || since.offset > top) {
    return { position, entries: [], complete: false }
  }
  const out: Array<Broker.Envelope> = []
  let expected = since.offset + 1
  for (const entry of entries as Array<unknown>) {
    const envelope = entryEnvelope(entry, position.epoch, expected, now - options.ttlMillis)
    if (envelope === undefined) break
    out.push(envelope)
    expected++
  }
  return { position, entries: out, complete: expected === top + 1 }
}

/** The envelope of a stream entry at `offset`, if it is that one, readable and not expired. */
const entryEnvelope = (entry: unknown, epoch: string, offset: number, oldest: number): Broker.Envelope | undefined => {
  if (!Array.isArray(entry) || entry.length !== 2) return undefined
  const [id, fields] = entry as [unknown, unknown]
  if (!Buffer.isBuffer(id) || id.toString("latin1") !== `${offset}-0` || !Array.isArray(fields)) return undefined
  let time: number | undefined
  let frame: Buffer | undefined
  for (let i = 0; i + 1 < fields.length; i += 2) {
    const name = String(fields[i])
    if (name === "t") time = Number(String(fields[i + 1]))
    else if (name === "f" && Buffer.isBuffer(fields[i + 1])) frame = fields[i + 1] as Buffer
  }
  if (time === undefined || !(time > oldest) || frame === undefined) return undefined
  const decoded = Codec.decode(frame, undefined)
  if (decoded === undefined || typeof decoded === "string") return undefined
  return decoded.envelope.at({ epoch, offset })
}

/** The answer to a join: every broadcast after `since`, or none. @internal */
export const recovery = (read: Read): Broker.Recovery => ({
  position: read.position,
  missed: read.complete ? read.entries : undefined
})

/** A history that could not be read (Redis unreachable or slow). @internal */
export const unreachable: Broker.Recovery = { position: undefined, missed: undefined }
