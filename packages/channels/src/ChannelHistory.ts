/**
 * Missed-message recovery. A topic with a history keeps its last broadcasts
 * for a while, so that a client that lost its connection gets, when it
 * rejoins, every broadcast it missed, in order, exactly once, or is told
 * that it cannot have them.
 *
 * ```ts
 * const Broadcaster = ChannelBroadcaster.layerLocal.pipe(
 *   Layer.provide(ChannelHistory.layer({ "rooms:*": { size: 100, ttl: "2 minutes" } }))
 * )
 * ```
 *
 * The history is the broker's: {@link ChannelHistory} configures the broker
 * it is provided to. The local broker keeps it in memory; `RedisBroker`
 * keeps it in Redis Streams, so that a client rejoining on another node
 * recovers as well. Topics without a history cost nothing more.
 *
 * On the wire, as the Phoenix protocol allows without a change to any
 * client:
 *
 * - Every broadcast on such a topic has a {@link Position}: an offset,
 *   increasing by one per broadcast of the topic, and the epoch of the
 *   topic's history, which changes whenever the history is lost (a restart
 *   of the one node, or of a Redis that kept nothing), so that positions
 *   from before are never mistaken for positions after. It travels in the
 *   broadcast's `ref` (`"epoch:offset"`), which the `phoenix` client gives
 *   to `channel.on` callbacks as their second argument; the payload is the
 *   application's, untouched.
 * - A join may carry the last position its client saw, as the join param
 *   `_position`. The join's reply comes first; then the broadcasts the
 *   client missed, in order, then the live ones, with no gap and no
 *   duplicate. The reply's response says whether it recovered
 *   (`_recovered`) and the position the channel continues from
 *   (`_position`). Recovery is never partial: a position older than the
 *   history (evicted by its size or its time to live), from another epoch,
 *   or none at all gets `_recovered: false` and nothing replayed, so that
 *   the application knows to fetch its state afresh.
 * - Should the stream a channel receives skip a position or change its
 *   epoch (a broker that lost messages), the channel ends with `phx_error`
 *   (leave reason `"resync"`): the client rejoins with its position and
 *   recovers what it lacks.
 *
 * With the official `phoenix` client, pass the position with join params
 * given as a function, which it evaluates on every rejoin:
 *
 * ```ts
 * let position
 * const channel = socket.channel("rooms:lobby", () => ({ _position: position }))
 * channel.on("new_msg", (message, ref) => { position = ref; render(message) })
 * channel.join().receive("ok", (reply) => {
 *   position = reply._position
 *   if (!reply._recovered) refetch()
 * })
 * ```
 *
 * `@effect-channels/client` does this for every channel and keeps the
 * protocol's fields out of the application's callbacks.
 *
 * Broadcasts on a topic with a history must have JSON payloads: a binary
 * frame has no `ref` to carry a position, and such a broadcast fails with
 * {@link UnrecoverablePayload}. Presence diffs, and the pushes of a
 * channel, are not part of the history. Delivery of what is recovered is
 * what the history holds: a broadcast sent with `broadcastFrom` is replayed
 * to its sender's client too, once it rejoins on a new connection.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as internal from "./internal/historyConfig.js"

/**
 * Where a broadcast stands in its topic's history.
 *
 * @since 0.1.0
 * @category models
 */
export interface Position {
  /** The history's epoch: a new one whenever the history is lost. */
  readonly epoch: string
  /** The broadcast's offset in the topic, from 1; 0 is the position of a topic with no broadcast yet. */
  readonly offset: number
}

/**
 * The join param that carries the last position a client saw, and the field
 * of the join reply's response that carries the position the channel
 * continues from.
 *
 * @since 0.1.0
 * @category constants
 */
export const positionField = "_position"

/**
 * The field of the join reply's response that says whether the join
 * recovered what the client missed.
 *
 * @since 0.1.0
 * @category constants
 */
export const recoveredField = "_recovered"

/**
 * A position as it travels: `"epoch:offset"`.
 *
 * @since 0.1.0
 * @category encoding
 */
export const format = (position: Position): string => `${position.epoch}:${position.offset}`

/**
 * A position read from the wire, or `undefined` if it is not one.
 *
 * @since 0.1.0
 * @category encoding
 */
export const parse = (input: unknown): Position | undefined => {
  if (typeof input !== "string" || input.length > 100) return undefined
  const colon = input.lastIndexOf(":")
  if (colon <= 0) return undefined
  const digits = input.slice(colon + 1)
  if (!/^(0|[1-9][0-9]{0,15})$/.test(digits)) return undefined
  const offset = Number(digits)
  return Number.isSafeInteger(offset) ? { epoch: input.slice(0, colon), offset } : undefined
}

/**
 * The history of the topics of a pattern.
 *
 * @since 0.1.0
 * @category models
 */
export interface TopicOptions {
  /** How many broadcasts a topic keeps, at most (1 to 100,000). */
  readonly size: number
  /** How long a broadcast is kept. */
  readonly ttl: Duration.DurationInput
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * How long a topic's position (its epoch and last offset) is kept after its
   * last broadcast, so that a client that missed nothing recovers even once
   * the broadcasts have expired (default 24 hours; at least the longest `ttl`).
   */
  readonly positionTtl?: Duration.DurationInput | undefined
}

/**
 * The history of a topic, as brokers read it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Resolved {
  /** The topic pattern it was configured for. */
  readonly pattern: string
  readonly size: number
  readonly ttlMillis: number
  readonly positionTtlMillis: number
}

/**
 * The histories a broker keeps: the first pattern that matches a topic gives
 * its history (patterns as `ChannelRouter`'s: `"rooms:*"`, or an exact topic).
 *
 * @since 0.1.0
 * @category models
 */
export interface Config {
  /** The history of a topic, or `undefined` for a topic that keeps none. */
  readonly of: (topic: string) => Resolved | undefined
  /** Whether any topic keeps a history. */
  readonly enabled: boolean
}

/**
 * The histories the broker keeps; by default none.
 *
 * @since 0.1.0
 * @category tags
 */
export class ChannelHistory extends Context.Reference<ChannelHistory>()("@effect-channels/ChannelHistory", {
  defaultValue: (): Config => internal.none
}) {}

/**
 * A history configuration that cannot work: a size or a time to live out of range.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChannelHistoryConfigError extends Data.TaggedError("ChannelHistoryConfigError")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message() {
    return `invalid channel history: ${this.problems.join("; ")}`
  }
}

/**
 * A broadcast refused at the call: its payload is binary, and its topic
 * keeps a history, whose positions only a JSON frame can carry. Nothing was
 * sent.
 *
 * @since 0.1.0
 * @category errors
 */
export class UnrecoverablePayload extends Data.TaggedError("UnrecoverablePayload")<{
  readonly topic: string
  readonly event: string
}> {
  override get message() {
    return `binary payload refused: ${this.event} on ${this.topic}, a topic with a history, must be JSON`
  }
}

/**
 * The histories of the topics of each pattern, checked.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  topics: Readonly<Record<string, TopicOptions>>,
  options: Options = {}
): Effect.Effect<Config, ChannelHistoryConfigError> =>
  Effect.suspend(() => {
    const resolved = internal.resolve(topics, options.positionTtl === undefined ? undefined : Duration.decode(options.positionTtl))
    return Array.isArray(resolved)
      ? Effect.fail(new ChannelHistoryConfigError({ problems: resolved }))
      : Effect.succeed(resolved)
  })

/**
 * Provides the histories to the broker made with it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  topics: Readonly<Record<string, TopicOptions>>,
  options: Options = {}
): Layer.Layer<ChannelHistory, ChannelHistoryConfigError> => Layer.effect(ChannelHistory, make(topics, options))
