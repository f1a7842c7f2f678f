/**
 * The socket's logs as Phoenix writes them (connects, joins, handled events),
 * their levels, and the filtering that keeps secrets out of them.
 */
import * as Effect from "effect/Effect"
import * as FiberRef from "effect/FiberRef"
import * as LogLevel from "effect/LogLevel"

/** A level by its literal, or `false` for no log. @internal */
export type Level = LogLevel.Literal | false

/** The `logLevel` option of a socket, as the public `ChannelSocket.Options`. @internal */
export type LogLevelOption =
  | Level
  | {
    readonly connect?: Level | undefined
    readonly join?: Level | undefined
    readonly event?: Level | undefined
  }

/** The `filterParameters` option: keys to hide (a key containing one is hidden), or the only keys to show. @internal */
export type FilterParameters = ReadonlyArray<string> | { readonly keep: ReadonlyArray<string> }

/** The level of each kind of log; `undefined`: not logged. @internal */
export interface LogLevels {
  readonly connect: LogLevel.LogLevel | undefined
  readonly join: LogLevel.LogLevel | undefined
  readonly event: LogLevel.LogLevel | undefined
}

const level = (literal: Level | undefined, fallback: LogLevel.LogLevel): LogLevel.LogLevel | undefined =>
  literal === undefined ? fallback : literal === false ? undefined : LogLevel.fromLiteral(literal)

/**
 * The levels of a socket's logs, Phoenix's by default: connects and joins at
 * Info, handled events at Debug. A single level sets connects and joins, and
 * leaves events at Debug; `false` turns every log off.
 *
 * @internal
 */
export const resolveLogLevels = (option: LogLevelOption | undefined): LogLevels => {
  if (option === false) return { connect: undefined, join: undefined, event: undefined }
  if (option === undefined || typeof option === "string") {
    const main = level(option, LogLevel.Info)
    return { connect: main, join: main, event: LogLevel.Debug }
  }
  return {
    connect: level(option.connect, LogLevel.Info),
    join: level(option.join, LogLevel.Info),
    event: level(option.event, LogLevel.Debug)
  }
}

/** Phoenix's default: `password` is never logged. @internal */
export const defaultFilterParameters: FilterParameters = ["password"]

const filtered = "[FILTERED]"

/**
 * Params as they may be logged, as Phoenix's `filter_values`: in objects, at
 * any depth, the value of a key containing one of `filter`'s strings (in any
 * case: `Password` is hidden as `password` is) is replaced by `"[FILTERED]"`. With `{ keep }`, only the values of the keys
 * listed are shown, at any depth, and every other value is filtered. Binary
 * payloads are shown by their size only.
 *
 * @internal
 */
export const filterParams = (params: unknown, filter: FilterParameters): unknown =>
  "keep" in filter ? keepValues(params, filter.keep) : discardValues(params, filter)

const discardValues = (value: unknown, hidden: ReadonlyArray<string>): unknown => {
  if (value instanceof Uint8Array) return `<binary, ${value.byteLength} bytes>`
  if (Array.isArray(value)) return value.map((item) => discardValues(item, hidden))
  if (typeof value !== "object" || value === null) return value
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    const lower = key.toLowerCase()
    out[key] = hidden.some((name) => lower.includes(name.toLowerCase())) ? filtered : discardValues(item, hidden)
  }
  return out
}

const keepValues = (value: unknown, keep: ReadonlyArray<string>): unknown => {
  if (Array.isArray(value)) return value.map((item) => keepValues(item, keep))
  if (typeof value !== "object" || value === null || value instanceof Uint8Array) return filtered
  const out: Record<string, unknown> = {}
  for (const [key, item] of Object.entries(value)) {
    out[key] = keep.includes(key) ? discardValues(item, []) : keepValues(item, keep)
  }
  return out
}

/** A duration as Phoenix prints it: µs up to a millisecond, else ms. @internal */
export const formatDuration = (millis: number): string => {
  const micros = Math.round(millis * 1000)
  return micros > 1000 ? `${Math.round(micros / 1000)}ms` : `${micros}µs`
}

/** The filtered params, as the `Parameters:` line of a log. @internal */
export const parametersLine = (params: unknown, filter: FilterParameters): string => {
  try {
    return `\n  Parameters: ${JSON.stringify(filterParams(params, filter)) ?? "null"}`
  } catch {
    return "\n  Parameters: <unprintable>"
  }
}

/**
 * A log at `level`, made by `log` only when the fiber's minimum level lets
 * it through: below it, the params are neither filtered nor formatted.
 *
 * @internal
 */
export const logAbove = (level: LogLevel.LogLevel, log: () => Effect.Effect<void>): Effect.Effect<void> =>
  Effect.flatMap(
    FiberRef.get(FiberRef.currentMinimumLogLevel),
    (minimum) => LogLevel.greaterThanEqual(level, minimum) ? log() : Effect.void
  )
