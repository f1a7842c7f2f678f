/**
 * The chat server's entry point: its settings from the environment, each
 * checked with one clear line and exit code 1 when wrong.
 *
 * - `PORT`: 0 to 65535 (0: any free port); default 4000.
 * - `HOST`: the address to listen on; default 127.0.0.1.
 * - `CHAT_ANNOUNCE_JOINS`: `false` turns off the `user:entered` broadcast.
 * - `CHAT_LOG_LEVEL`: `false` turns off the socket's connect and join logs (Phoenix's, at Info; the
 *   benchmark's servers log nothing).
 * - `CHAT_INTERCEPT`: `true` sends `new:msg` through `handleOut` (the benchmark's cost of `intercept`).
 * - `CHAT_METRICS`: `false` turns off metrics (and `GET /metrics`).
 * - `CHAT_HISTORY_SIZE`: how many of the lobby's last broadcasts are kept for
 *   pages that lost their connection (0 to 100000; 0: none, no recovery);
 *   default 100.
 * - `CHAT_HISTORY_TTL`: how long they are kept (a duration: `30 seconds`,
 *   `2 minutes`); default `2 minutes`.
 * - `CHAT_TRACES`: where spans go: `none` (default), `console` or `discard`.
 * - `REDIS_URL`: a Redis to join the other nodes on (one chat across
 *   processes); none (default): this process alone, no Redis needed.
 * - `REDIS_PREFIX`: the prefix of the chat's Redis channels and keys
 *   (default `chat`): nodes with the same one are one chat.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Config from "effect/Config"
import * as ConfigError from "effect/ConfigError"
import * as Console from "effect/Console"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Layer from "effect/Layer"
import type { ChannelHistory } from "@effect-channels/core"
import type { RedisBroker, RedisLongPoll, RedisPresence } from "@effect-channels/redis"
import * as ChatServer from "./ChatServer.js"
import * as Telemetry from "./Telemetry.js"

const port = Config.string("PORT").pipe(
  Config.withDefault("4000"),
  Config.mapOrFail((value) =>
    /^\d{1,5}$/.test(value) && Number(value) <= 65535
      ? Either.right(Number(value))
      : Either.left(ConfigError.InvalidData([], `PORT must be a port number from 0 to 65535, got ${JSON.stringify(value)}`))
  )
)

const historySize = Config.string("CHAT_HISTORY_SIZE").pipe(
  Config.withDefault("100"),
  Config.mapOrFail((value) =>
    /^\d{1,6}$/.test(value) && Number(value) <= 100_000
      ? Either.right(Number(value))
      : Either.left(
        ConfigError.InvalidData([], `CHAT_HISTORY_SIZE must be a number from 0 to 100000, got ${JSON.stringify(value)}`)
      )
  )
)

const historyTtl = Config.string("CHAT_HISTORY_TTL").pipe(
  Config.withDefault("2 minutes"),
  Config.mapOrFail((value) => {
    const ttl = Option.filter(Duration.decodeUnknown(value), (ttl) => Duration.toMillis(ttl) >= 1 && Duration.isFinite(ttl))
    return Option.isSome(ttl)
      ? Either.right(ttl.value)
      : Either.left(
        ConfigError.InvalidData([], `CHAT_HISTORY_TTL must be a duration such as "2 minutes", got ${JSON.stringify(value)}`)
      )
  })
)

const settings = Config.all({
  port,
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1")),
  redisPrefix: Config.string("REDIS_PREFIX").pipe(Config.withDefault("chat")),
  redisUrl: Config.map(Config.option(Config.string("REDIS_URL")), (url) => Option.getOrUndefined(Option.filter(url, (value) => value !== ""))),
  announceJoins: Config.map(Config.string("CHAT_ANNOUNCE_JOINS").pipe(Config.withDefault("true")), (value) => value !== "false"),
  logLevel: Config.map(
    Config.string("CHAT_LOG_LEVEL").pipe(Config.withDefault("true")),
    (value): false | undefined => value === "false" ? false : undefined
  ),
  historySize,
  historyTtl,
  interceptMessages: Config.map(Config.string("CHAT_INTERCEPT").pipe(Config.withDefault("false")), (value) => value === "true"),
  metrics: Config.map(Config.string("CHAT_METRICS").pipe(Config.withDefault("true")), (value) => value !== "false"),
  traces: Config.string("CHAT_TRACES").pipe(
    Config.withDefault("none"),
    Config.mapOrFail((value) =>
      Telemetry.isTraces(value)
        ? Either.right(value)
        : Either.left(ConfigError.InvalidData([], `CHAT_TRACES must be none, console or discard, got ${JSON.stringify(value)}`))
    )
  )
})

/** The one line that says what is wrong. */
const describe = (
  error:
    | ConfigError.ConfigError
    | ChatServer.ListenError
    | ChannelHistory.ChannelHistoryConfigError
    | RedisBroker.RedisBrokerConfigError
    | RedisPresence.RedisPresenceError
    | RedisLongPoll.RedisLongPollConfigError
): string =>
  error._tag === "ListenError" || error._tag === "ChannelHistoryConfigError" || error._tag === "RedisBrokerConfigError" ||
    error._tag === "RedisPresenceError" || error._tag === "RedisLongPollConfigError"
    ? error.message
    : ConfigError.reduceWithContext(error, undefined, {
      andCase: (_, left, right) => [left, right].join("; "),
      orCase: (_, left, right) => [left, right].join("; "),
      invalidDataCase: (_, __, message) => message,
      missingDataCase: (_, path, message) => `${path.join(".")}: ${message}`,
      sourceUnavailableCase: (_, path, message) => `${path.join(".")}: ${message}`,
      unsupportedCase: (_, path, message) => `${path.join(".")}: ${message}`
    })

const main = Effect.flatMap(settings, (options) => Layer.launch(ChatServer.layer(options))).pipe(
  Effect.tapError((error) => Console.error(`chat: ${describe(error)}`))
)

NodeRuntime.runMain(main, { disableErrorReporting: true })
