/**
 * Long-poll sessions across nodes over Redis, without sticky sessions: a
 * `SessionRelay` that carries a poll or a POST reaching a node that does not
 * hold the session to the node that does (its owner), and the owner's
 * answer back.
 *
 * ```ts
 * import { RedisLongPoll } from "@effect-channels/redis"
 *
 * // Every node: the same long-poll `secret`, and the relay under the server.
 * NodeChannelServer.layer(createServer, { port: 4000, longPoll: { secret } }).pipe(
 *   Layer.provide(RedisLongPoll.layer({ url: "redis://127.0.0.1:6379", prefix: "chat" }))
 * )
 * ```
 *
 * Each node subscribes one Redis channel, `{<prefix>}:longpoll:<nodeId>`.
 * A session's token (signed, so no client can change it) names its owner;
 * a node that receives a request for another node's session PUBLISHes it
 * to the owner's channel and waits for the answer on its own. The owner
 * answers as if the request had reached it: a relayed poll takes the
 * session's queue (so messages keep their order, and stay bounded by
 * `outboundBufferLimit`), waits up to the poll window, and counts as a poll
 * for the session's expiry. A poll whose client goes away is cancelled on
 * the owner, so that it does not take messages no one will read.
 *
 * A PUBLISH that reaches no subscriber means the owner is gone (stopped,
 * killed: Redis drops its connection): the request is answered 410 at once,
 * and the client opens a session on the node it reaches and rejoins. So is
 * a request while Redis is unreachable, or one the owner does not answer in
 * time (the poll window plus 5 seconds).
 *
 * Nothing is stored in Redis; what crosses it is the request and the answer
 * (a POST's body, a poll's messages), each once.
 *
 * @since 0.1.0
 */
import { SessionRelay } from "@effect-channels/core"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Runtime from "effect/Runtime"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { Redis } from "ioredis"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** The Redis server: `redis://[user:password@]host:port[/db]` (`rediss://` for TLS). Default `redis://127.0.0.1:6379`. */
  readonly url?: string
  /** Prefixes the Redis channels, as `RedisBroker`'s. Default `effect-channels`. */
  readonly prefix?: string
  /** This node's id, unique among the nodes: default 72 random bits. */
  readonly nodeId?: string
  /** How long starting waits for Redis before serving (relayed requests are answered 410 until it is reached). Default 5 s. */
  readonly connectTimeout?: Duration.DurationInput
}

/**
 * Options that cannot work, every problem listed in the message.
 *
 * @since 0.1.0
 * @category errors
 */
export class RedisLongPollConfigError extends Data.TaggedError("RedisLongPollConfigError")<{
  readonly problems: ReadonlyArray<string>
}> {
  override get message() {
    return `invalid RedisLongPoll options: ${this.problems.join("; ")}`
  }
}

const RequestSchema = Schema.Union(
  Schema.TaggedStruct("Poll", {}),
  Schema.TaggedStruct("Post", { body: Schema.String, ndjson: Schema.Boolean })
)

const AnswerSchema = Schema.Struct({
  status: Schema.Number,
  token: Schema.optionalWith(Schema.String, { exact: true }),
  messages: Schema.optionalWith(Schema.Array(Schema.String), { exact: true }),
  handled: Schema.optionalWith(Schema.Number, { exact: true })
})

/** What crosses Redis, version 1: a request, its answer, or a request's cancellation. */
const Wire = Schema.parseJson(Schema.Union(
  Schema.Struct({
    v: Schema.Literal(1),
    t: Schema.Literal("request"),
    from: Schema.String,
    id: Schema.Number,
    to: Schema.String,
    session: Schema.String,
    request: RequestSchema
  }),
  Schema.Struct({ v: Schema.Literal(1), t: Schema.Literal("answer"), id: Schema.Number, answer: AnswerSchema }),
  Schema.Struct({ v: Schema.Literal(1), t: Schema.Literal("cancel"), from: Schema.String, id: Schema.Number })
))
type Wire = typeof Wire.Type
const decodeWire = Schema.decodeUnknownOption(Wire)
const encodeWire = Schema.encodeSync(Wire)

const randomId = () => {
  const bytes = new Uint8Array(9)
  globalThis.crypto.getRandomValues(bytes)
  return Buffer.from(bytes).toString("base64url")
}

const resolve = (options: Options) => {
  const problems: Array<string> = []
  const url = options.url ?? "redis://127.0.0.1:6379"
  try {
    const parsed = new URL(url)
    if ((parsed.protocol !== "redis:" && parsed.protocol !== "rediss:") || parsed.hostname === "") throw new Error()
  } catch {
    problems.push(`url must be a redis:// or rediss:// URL with a host, got ${JSON.stringify(url)}`)
  }
  const prefix = options.prefix ?? "effect-channels"
  if (prefix.length === 0 || /[\s{}]/.test(prefix)) {
    problems.push(`prefix must be non-empty, without spaces or braces, got ${JSON.stringify(prefix)}`)
  }
  const nodeId = options.nodeId ?? randomId()
  if (!/^[A-Za-z0-9_.:-]{1,64}$/.test(nodeId)) {
    problems.push(`nodeId must be 1 to 64 letters, digits or _.:-, got ${JSON.stringify(nodeId)}`)
  }
  const connectTimeout = Duration.decodeUnknown(options.connectTimeout ?? "5 seconds")
  if (Option.isNone(connectTimeout) || !Duration.isFinite(connectTimeout.value)) {
    problems.push("connectTimeout must be a finite duration")
  }
  return problems.length > 0
    ? Effect.fail(new RedisLongPollConfigError({ problems }))
    : Effect.succeed({
      url,
      prefix,
      nodeId,
      connectTimeout: Option.getOrElse(connectTimeout, () => Duration.seconds(5))
    })
}

/** How long to wait between reconnection attempts: quickly at first, then every second. */
const retryStrategy = (times: number) => Math.min(times * 100, 1000)

const closeClient = (client: Redis) =>
  Promise.race([
    client.quit().then(() => undefined, () => undefined),
    new Promise<void>((resolve) => setTimeout(resolve, 1000).unref())
  ]).finally(() => client.disconnect())

const onceReady = (client: Redis) =>
  new Promise<void>((resolve) => {
    if (client.status === "ready") resolve()
    else client.once("ready", () => resolve())
  })

const ignore = () => {}

/**
 * The relay over Redis, for the life of the scope (its Redis connections are
 * closed with it).
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<SessionRelay.Service, RedisLongPollConfigError, Scope.Scope> =>
  Effect.gen(function*() {
    const config = yield* resolve(options)
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const scope = yield* Effect.scope
    const channelOf = (nodeId: string) => `{${config.prefix}}:longpoll:${nodeId}`
    const own = channelOf(config.nodeId)
    // Requests this node relayed, waiting for their answer: as many as the
    // requests it is serving, each until its timeout.
    const pending = new Map<number, (answer: SessionRelay.Answer | undefined) => void>()
    // Requests relayed to this node, being served: each until its poll window.
    const serving = new Map<string, Fiber.RuntimeFiber<void>>()
    const servers = new Map<string, (sessionId: string, request: SessionRelay.Request) => Effect.Effect<SessionRelay.Answer>>()
    let requests = 0
    let registrations = 0

    const clientOptions = {
      // While Redis is unreachable a command fails at once rather than wait
      // in an unbounded queue: the request is answered 410.
      enableOfflineQueue: false,
      autoResubscribe: false,
      maxRetriesPerRequest: 0,
      retryStrategy,
      connectionName: `effect-channels-longpoll:${config.nodeId}`
    } as const
    const [commands, subscriber] = yield* Effect.acquireRelease(
      Effect.sync(() => [new Redis(config.url, clientOptions), new Redis(config.url, clientOptions)] as const),
      (clients) => Effect.promise(() => Promise.all(clients.map(closeClient)))
    )

    const send = (nodeId: string, message: Wire) => commands.publish(channelOf(nodeId), encodeWire(message))

    const receive = (text: string) => {
      const decoded = decodeWire(text)
      if (Option.isNone(decoded)) return
      const message = decoded.value
      switch (message.t) {
        case "answer": {
          const resume = pending.get(message.id)
          if (resume !== undefined) {
            pending.delete(message.id)
            resume(message.answer)
          }
          return
        }
        case "cancel": {
          const fiber = serving.get(`${message.from}/${message.id}`)
          if (fiber !== undefined) runFork(Fiber.interrupt(fiber))
          return
        }
        case "request": {
          const key = `${message.from}/${message.id}`
          const server = servers.get(message.to)
          const answered = server === undefined
            ? Effect.succeed<SessionRelay.Answer>({ status: 410 })
            : server(message.session, message.request)
          const fiber = runFork(
            Effect.flatMap(answered, (answer) =>
              Effect.promise(() =>
                send(message.from, { v: 1, t: "answer", id: message.id, answer }).then(ignore, ignore)
              )),
            { scope }
          )
          serving.set(key, fiber)
          fiber.addObserver(() => serving.delete(key))
          return
        }
      }
    }

    commands.on("error", ignore)
    subscriber.on("error", ignore)
    subscriber.on("message", (_channel: string, text: string) => receive(text))
    // Every time the subscriber connects, the first included.
    subscriber.on("ready", () => {
      subscriber.subscribe(own).catch(ignore)
    })
    const ready = Promise.all([onceReady(commands), onceReady(subscriber)])
    const reached = yield* Effect.promise(() => ready).pipe(
      Effect.timeoutTo({ duration: config.connectTimeout, onSuccess: () => true, onTimeout: () => false })
    )
    if (!reached) {
      yield* Effect.logWarning(
        `long-poll relay: Redis at ${config.url} not reached; requests for other nodes' sessions are answered 410 until it is`
      )
    }

    const service: SessionRelay.Service = {
      register: (serve) =>
        Effect.acquireRelease(
          Effect.sync(() => {
            const registration = String(++registrations)
            servers.set(registration, serve)
            return registration
          }),
          (registration) => Effect.sync(() => servers.delete(registration))
        ).pipe(Effect.map((registration) => `${config.nodeId}/${registration}`)),
      forward: (address, sessionId, request, timeout) => {
        const slash = address.lastIndexOf("/")
        if (slash <= 0) return Effect.succeed(undefined)
        const nodeId = address.slice(0, slash)
        const to = address.slice(slash + 1)
        return Effect.async<SessionRelay.Answer | undefined>((resume) => {
          const id = ++requests
          pending.set(id, (answer) => resume(Effect.succeed(answer)))
          const settle = () => {
            if (pending.delete(id)) resume(Effect.succeed(undefined))
          }
          // No subscriber: the owner is gone.
          send(nodeId, { v: 1, t: "request", from: config.nodeId, id, to, session: sessionId, request }).then(
            (receivers) => {
              if (receivers === 0) settle()
            },
            settle
          )
          return Effect.sync(() => {
            if (pending.delete(id)) send(nodeId, { v: 1, t: "cancel", from: config.nodeId, id }).catch(ignore)
          })
        }).pipe(Effect.timeoutTo({ duration: timeout, onSuccess: (answer) => answer, onTimeout: () => undefined }))
      }
    }
    return service
  })

/**
 * The relay over Redis as the `SessionRelay`: provide it to the server
 * (`NodeChannelServer.layer`, `ChannelSocket.router`) on every node.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<SessionRelay.SessionRelay, RedisLongPollConfigError> =>
  Layer.scoped(SessionRelay.SessionRelay, make(options))

