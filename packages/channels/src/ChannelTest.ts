/**
 * Test channel handlers the way Phoenix users do with `Phoenix.ChannelTest`,
 * in `it.effect` / `it.scoped` blocks, without a network. Sockets here run
 * the very connection runtime that serves WebSockets, over an in-memory
 * transport, with real V2 frames in both directions.
 *
 * ```ts
 * import { ChannelTest } from "@effect-channels/core"
 * import { it } from "@effect/vitest"
 *
 * const TestLayer = LobbyChannel.layer.pipe(Layer.provideMerge(ChannelTest.layer))
 *
 * it.scoped("new:msg is re-broadcast", () =>
 *   Effect.gen(function*() {
 *     const socket = yield* ChannelTest.connect({ user: "ada" })
 *     const lobby = yield* ChannelTest.subscribeAndJoin(socket, "rooms:lobby", { user: "ada" })
 *     yield* ChannelTest.push(lobby, "new:msg", { body: "hi" })
 *     yield* ChannelTest.assertBroadcast("rooms:lobby", "new:msg", { body: "hi" })
 *     yield* ChannelTest.assertPush(lobby, "new:msg", { body: "hi" })
 *   }).pipe(Effect.provide(TestLayer)))
 * ```
 *
 * Every assertion waits for its message up to a timeout (default 100 ms, as
 * ExUnit's `assert_receive`). Under `TestClock` that timeout is test time: an
 * assertion that has to wait advances the `TestClock` while it waits, so no
 * test sleeps, and timers of the code under test (heartbeats, presence
 * batching) move with it. A failed assertion fails with {@link AssertionFailed},
 * whose message lists what was received instead.
 *
 * The test layer observes every broadcast published in it from the moment it
 * is built, so `assertBroadcast` sees broadcasts to any topic.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type * as TestClock from "effect/TestClock"
import { Broker } from "./Broker.js"
import * as ChannelBroadcaster from "./ChannelBroadcaster.js"
import type { ConnectInfo, SocketInfo } from "./ChannelConn.js"
import type { ConnectRefused } from "./ChannelHandler.js"
import { ChannelHandler } from "./ChannelHandler.js"
import type * as ChannelSocket from "./ChannelSocket.js"
import { Refused as ChannelSocketRefused } from "./ChannelSocket.js"
import { telemetry } from "./internal/metrics.js"
import * as Socket from "./internal/socket.js"
import * as ClientCodec from "./protocol/ClientCodec.js"
import type { Broadcast, Frame, Outbound, Payload, Push, Reply, ReplyStatus } from "./protocol/Message.js"
import type * as Presence from "./Presence.js"
import * as Msg from "./protocol/Message.js"
import * as Serializer from "./protocol/Serializer.js"
import { bytes, Mailbox } from "./internal/testMailbox.js"
import type * as Connection from "./runtime/Connection.js"
import type { Listener, Opened } from "./transport/Transport.js"

/**
 * A failed assertion.
 *
 * @since 0.1.0
 * @category errors
 */
export class AssertionFailed extends Data.TaggedError("AssertionFailed")<{
  readonly message: string
}> {}

/**
 * A join the handler refused (or that crashed): `reason` is the error reply.
 *
 * @since 0.1.0
 * @category errors
 */
export class JoinRefused extends Data.TaggedError("JoinRefused")<{
  readonly topic: string
  readonly reason: Payload
}> {
  override get message() {
    return `join to ${this.topic} refused: ${JSON.stringify(this.reason)}`
  }
}

/**
 * What a payload must be: equal to a value (deep structural equality, bytes
 * included), or satisfy a predicate.
 *
 * @since 0.1.0
 * @category models
 */
export type PayloadMatch =
  | ((payload: Payload) => boolean)
  | null
  | boolean
  | number
  | string
  | Uint8Array
  | ReadonlyArray<unknown>
  | { readonly [key: string]: unknown }

/**
 * @since 0.1.0
 * @category models
 */
export interface AssertOptions {
  /** How long to wait; default 100 ms (test time under `TestClock`). */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * The close of a connection, by the server or by the test.
 *
 * @since 0.1.0
 * @category models
 */
export interface Closed {
  readonly code: number
  readonly reason: string
}

/**
 * A client connection under test.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestSocket {
  readonly _tag: "TestSocket"
  /** The server's view of the socket: id, connect info, assigns. */
  readonly socket: SocketInfo
  /** Completes when the server closes the connection. */
  readonly closed: Effect.Effect<Closed>
}

/** A test socket with what the verbs of this module use. */
class TestSocketImpl implements TestSocket {
  readonly _tag = "TestSocket"
  nextRef = 0
  constructor(
    readonly connection: Connection.Connection,
    readonly mailbox: Mailbox<Outbound>,
    readonly presences: Map<string, Presence.State>,
    readonly history: Array<Outbound>,
    readonly fiber: Fiber.RuntimeFiber<void>,
    readonly end: Deferred.Deferred<Closed>
  ) {}
  get socket(): SocketInfo {
    return this.connection.socket
  }
  get closed(): Effect.Effect<Closed> {
    return Deferred.await(this.end)
  }
  toJSON() {
    return { _id: "TestSocket", id: Option.getOrNull(this.socket.id), received: this.history.length }
  }
}

const impl = (socket: TestSocket): TestSocketImpl => socket as TestSocketImpl

/**
 * A channel joined by a {@link TestSocket}.
 *
 * @since 0.1.0
 * @category models
 */
export interface TestChannel {
  readonly _tag: "TestChannel"
  readonly socket: TestSocket
  readonly topic: string
  readonly joinRef: string
  /** The join reply's response. */
  readonly reply: Payload
}

/**
 * The service behind the test layer: the broadcasts observed so far.
 *
 * @since 0.1.0
 * @category tags
 */
export class ChannelTest extends Context.Tag("@effect-channels/ChannelTest")<ChannelTest, Recorder>() {}

/**
 * What the test layer records: the broadcasts published in it that no
 * assertion has taken yet.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recorder {
  readonly broadcasts: Effect.Effect<ReadonlyArray<Broadcast>>
}

const recorded = Effect.map(ChannelTest, (recorder) => (recorder as RecorderImpl).mailbox)

class RecorderImpl implements Recorder {
  readonly mailbox = new Mailbox<Broadcast>()
  get broadcasts() {
    return Effect.sync(() => this.mailbox.items.slice())
  }
}

/**
 * The test layer: a local broker and broadcaster, and the recorder of their
 * broadcasts. Provide your `ChannelHandler` layer next to it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ChannelTest | Broker | ChannelBroadcaster.ChannelBroadcaster> = Layer.scoped(
  ChannelTest,
  Effect.gen(function*() {
    const broker = yield* Broker
    const recorder = new RecorderImpl()
    const published = yield* broker.published
    yield* Effect.forkScoped(Effect.forever(Effect.map(Queue.take(published), (envelope) =>
      recorder.mailbox.add(envelope.message))))
    return recorder
  })
).pipe(Layer.provideMerge(ChannelBroadcaster.layerLocal))

// Matching

const equals = (a: unknown, b: unknown): boolean => {
  if (Object.is(a, b)) return true
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    return a instanceof Uint8Array && b instanceof Uint8Array && a.length === b.length && a.every((x, i) => x === b[i])
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const keys = Object.keys(a)
  if (keys.length !== Object.keys(b).length) return false
  return keys.every((key) => equals((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]))
}

const matchPayload = (expected: PayloadMatch | undefined, payload: Payload) =>
  expected === undefined ? true : typeof expected === "function" ? expected(payload) : equals(expected, payload)

const describeMatch = (expected: PayloadMatch | undefined) =>
  expected === undefined ? "any payload" : typeof expected === "function" ? "a payload matching the predicate" : JSON.stringify(expected, bytes)

const isTestClock = Effect.clockWith((clock) => Effect.succeed("adjust" in clock ? clock as TestClock.TestClock : undefined))

/** Waits up to `timeout`, in test time under `TestClock`. */
const within = <A>(wait: Effect.Effect<A>, timeout: Duration.DurationInput | undefined): Effect.Effect<Option.Option<A>> =>
  Effect.flatMap(isTestClock, (testClock) => {
    const duration = Duration.decode(timeout ?? "100 millis")
    return testClock === undefined
      ? Effect.timeoutTo(wait, { duration, onSuccess: Option.some, onTimeout: Option.none })
      : Effect.raceFirst(Effect.asSome(wait), Effect.as(testClock.adjust(duration), Option.none()))
  })

const fail = (message: string) => Effect.fail(new AssertionFailed({ message }))

// Sockets

/**
 * Connects a test socket: admits it as every transport is admitted (the
 * handler's `connect` runs with `params`; `connectInfo` gives the rest of
 * the request: its headers are kept as the socket's `connectInfo` option
 * says, none by default), then starts a connection that lives until {@link close}, a
 * server-side close, or the end of the scope. Fails with the handler's
 * `ConnectRefused`, or with `ChannelSocket.Refused` for any other refusal
 * (500 for a `connect` that failed otherwise, as a transport would answer).
 *
 * @since 0.1.0
 * @category sockets
 */
export const connect = (
  params: Readonly<Record<string, string>> = {},
  options: {
    readonly connectInfo?: Partial<Pick<ConnectInfo, "transport" | "headers" | "peer" | "authToken">> | undefined
    readonly socket?: ChannelSocket.Options | undefined
  } = {}
): Effect.Effect<
  TestSocket,
  ConnectRefused | ChannelSocket.Refused,
  Scope.Scope | ChannelHandler | Broker | ChannelBroadcaster.ChannelBroadcaster
> =>
  Effect.gen(function*() {
    const services = {
      handler: yield* ChannelHandler,
      broker: yield* Broker,
      broadcaster: yield* ChannelBroadcaster.ChannelBroadcaster,
      telemetry: yield* telemetry
    }
    const info = options.connectInfo ?? {}
    const query = new URLSearchParams({ ...params, vsn: Serializer.V2.vsn })
    const request: Socket.Request = {
      transport: info.transport ?? "test",
      url: `/socket/websocket?${query}`,
      headers: info.headers ?? {},
      remoteAddress: Option.map(info.peer ?? Option.none(), (peer) => peer.address),
      remotePort: Option.getOrUndefined(Option.map(info.peer ?? Option.none(), (peer) => peer.port)),
      authToken: info.authToken ?? Option.none()
    }
    const mailbox = new Mailbox<Outbound>()
    const presences = new Map<string, Presence.State>()
    const history: Array<Outbound> = []
    const receiveFrame = (frame: Frame) => {
      const message = ClientCodec.decode(frame)
      if (Either.isLeft(message)) return
      if (message.right._tag !== "Reply") syncPresence(presences, message.right)
      history.push(message.right)
      mailbox.add(message.right)
    }
    const end = yield* Deferred.make<Closed>()
    let listener: Listener | undefined
    const opened: Opened = {
      transport: {
        send: receiveFrame,
        sendAll: (frames) => frames.forEach(receiveFrame),
        bufferedAmount: () => 0,
        close: (code, reason) => {
          Deferred.unsafeDone(end, Exit.succeed({ code, reason }))
          listener?.onClose()
        },
        abort: () => {
          Deferred.unsafeDone(end, Exit.succeed({ code: 1006, reason: "aborted" }))
          listener?.onClose()
        }
      },
      listen: (connectionListener) => Effect.sync(() => {
        listener = connectionListener
      })
    }
    const started = yield* Deferred.make<Connection.Connection, ConnectRefused | ChannelSocket.Refused>()
    const fiber = yield* Effect.forkScoped(Effect.scoped(Effect.gen(function*() {
      const scope = yield* Effect.scope
      const accepted = yield* Effect.either(
        Socket.accept(request, () => Effect.succeed(opened), scope, Socket.resolveOptions(options.socket), services)
      )
      if (Either.isLeft(accepted)) {
        const refusal = accepted.left
        return yield* Effect.asVoid(Deferred.fail(
          started,
          refusal.refused ?? new ChannelSocketRefused({ status: refusal.status, body: refusal.body })
        ))
      }
      yield* Deferred.succeed(started, accepted.right)
      yield* accepted.right.run
    })))
    const connection = yield* Deferred.await(started)
    return new TestSocketImpl(connection, mailbox, presences, history, fiber, end) as TestSocket
  })

const send = (socket: TestSocket, topic: string, event: string, payload: Payload, joinRef: string | null) =>
  Effect.sync(() => {
    const ref = String(++impl(socket).nextRef)
    impl(socket).connection.onFrame(ClientCodec.encode({ joinRef: joinRef ?? ref, ref, topic, event, payload }))
    return ref
  })

const awaitReply = (socket: TestSocket, ref: string, timeout: Duration.DurationInput) =>
  within(impl(socket).mailbox.await((message) => message._tag === "Reply" && message.ref === ref), timeout) as Effect.Effect<
    Option.Option<Reply>
  >

const join_ = (socket: TestSocket, topic: string, payload: Payload) =>
  Effect.gen(function*() {
    const ref = yield* send(socket, topic, Msg.Events.join, payload, null)
    const reply = yield* awaitReply(socket, ref, "5 seconds")
    if (Option.isNone(reply)) {
      return yield* Effect.fail(new JoinRefused({ topic, reason: { reason: "no join reply within 5 seconds" } }))
    }
    if (reply.value.status === "error") return yield* Effect.fail(new JoinRefused({ topic, reason: reply.value.response }))
    return { _tag: "TestChannel", socket, topic, joinRef: ref, reply: reply.value.response } satisfies TestChannel
  })

/**
 * Joins a topic: succeeds with the channel (its `reply` is the join
 * response) or fails with the refusal.
 *
 * @since 0.1.0
 * @category channels
 */
export const join = (socket: TestSocket, topic: string, payload: Payload = {}): Effect.Effect<TestChannel, JoinRefused> =>
  join_(socket, topic, payload)

/**
 * Joins a topic, Phoenix style. The test layer already observes every
 * broadcast, so this is {@link join}, named for those who look for it.
 *
 * @since 0.1.0
 * @category channels
 */
export const subscribeAndJoin: (
  socket: TestSocket,
  topic: string,
  payload?: Payload
) => Effect.Effect<TestChannel, JoinRefused> = join

/**
 * Pushes an event on a channel; returns its ref for {@link assertReply}.
 *
 * @since 0.1.0
 * @category channels
 */
export const push = (channel: TestChannel, event: string, payload: Payload = {}): Effect.Effect<string> =>
  send(channel.socket, channel.topic, event, payload, channel.joinRef)

/**
 * Leaves a channel and waits for the `ok` reply.
 *
 * @since 0.1.0
 * @category channels
 */
export const leave = (channel: TestChannel): Effect.Effect<void, AssertionFailed> =>
  Effect.flatMap(push(channel, Msg.Events.leave), (ref) => Effect.asVoid(assertReply(channel, ref, "ok")))

/**
 * Closes the connection from the client side, as a close frame does, and
 * waits until the server has finished with it (`leave` and `disconnect` ran).
 *
 * @since 0.1.0
 * @category sockets
 */
export const close = (socket: TestSocket): Effect.Effect<void> =>
  Effect.zipRight(
    Effect.sync(() => {
      Deferred.unsafeDone(impl(socket).end, Exit.succeed({ code: 1000, reason: "closed by the client" }))
      impl(socket).connection.onClose()
    }),
    Fiber.await(impl(socket).fiber)
  )

/**
 * Drops the connection abruptly, as a lost transport does (the connection's
 * fiber is interrupted), and waits until the server has finished with it.
 *
 * @since 0.1.0
 * @category sockets
 */
export const abort = (socket: TestSocket): Effect.Effect<void> => Effect.asVoid(Fiber.interrupt(impl(socket).fiber))

// Assertions

/**
 * Asserts that a reply with `ref` arrives with `status` (and `response`);
 * succeeds with the response.
 *
 * @since 0.1.0
 * @category assertions
 */
export const assertReply = (
  channel: TestChannel,
  ref: string,
  status: ReplyStatus,
  response?: PayloadMatch,
  options: AssertOptions = {}
): Effect.Effect<Payload, AssertionFailed> =>
  Effect.flatMap(awaitReply(channel.socket, ref, options.timeout ?? "100 millis"), (reply) => {
    if (Option.isNone(reply)) {
      return fail(`expected a reply to ref ${ref}, received:\n  ${impl(channel.socket).mailbox.describe()}`)
    }
    if (reply.value.status !== status || !matchPayload(response, reply.value.response)) {
      return fail(
        `expected a reply ${status} with ${describeMatch(response)} to ref ${ref}, received:\n  ${
          JSON.stringify(reply.value, bytes)
        }`
      )
    }
    return Effect.succeed(reply.value.response)
  })

const pushMatcher = (target: TestSocket | TestChannel, event: string, payload: PayloadMatch | undefined) =>
(message: Outbound): message is Push | Broadcast =>
  message._tag !== "Reply" &&
  message.event === event &&
  (target._tag === "TestSocket" || message.topic === target.topic) &&
  matchPayload(payload, message.payload)

const socketOf = (target: TestSocket | TestChannel) => impl(target._tag === "TestSocket" ? target : target.socket)

/**
 * Asserts that the client receives `event` (pushed to it, or broadcast to a
 * topic it joined), on the channel's topic when given a channel; succeeds
 * with the payload.
 *
 * @since 0.1.0
 * @category assertions
 */
export const assertPush = (
  target: TestSocket | TestChannel,
  event: string,
  payload?: PayloadMatch,
  options: AssertOptions = {}
): Effect.Effect<Payload, AssertionFailed> => {
  const { mailbox } = socketOf(target)
  return Effect.flatMap(within(mailbox.await(pushMatcher(target, event, payload)), options.timeout), (message) =>
    Option.isSome(message)
      ? Effect.succeed((message.value as Push | Broadcast).payload)
      : fail(`expected a push ${event} with ${describeMatch(payload)}, received:\n  ${mailbox.describe()}`))
}

/**
 * Asserts that the client receives no such push within the timeout.
 *
 * @since 0.1.0
 * @category assertions
 */
export const refutePush = (
  target: TestSocket | TestChannel,
  event: string,
  payload?: PayloadMatch,
  options: AssertOptions = {}
): Effect.Effect<void, AssertionFailed> =>
  Effect.flatMap(within(socketOf(target).mailbox.await(pushMatcher(target, event, payload)), options.timeout), (message) =>
    Option.isSome(message)
      ? fail(`expected no push ${event} with ${describeMatch(payload)}, received:\n  ${JSON.stringify(message.value, bytes)}`)
      : Effect.void)

const broadcastMatcher = (topic: string, event: string, payload: PayloadMatch | undefined) => (message: Broadcast) =>
  message.topic === topic && message.event === event && matchPayload(payload, message.payload)

/**
 * Asserts that `event` is broadcast to `topic` (by a channel or by the
 * `ChannelBroadcaster`); succeeds with the payload.
 *
 * @since 0.1.0
 * @category assertions
 */
export const assertBroadcast = (
  topic: string,
  event: string,
  payload?: PayloadMatch,
  options: AssertOptions = {}
): Effect.Effect<Payload, AssertionFailed, ChannelTest> =>
  Effect.flatMap(recorded, (broadcasts) =>
    Effect.flatMap(within(broadcasts.await(broadcastMatcher(topic, event, payload)), options.timeout), (message) =>
      Option.isSome(message)
        ? Effect.succeed(message.value.payload)
        : fail(`expected a broadcast ${event} to ${topic} with ${describeMatch(payload)}, received:\n  ${
          broadcasts.describe()
        }`)))

/**
 * Asserts that no such broadcast happens within the timeout.
 *
 * @since 0.1.0
 * @category assertions
 */
export const refuteBroadcast = (
  topic: string,
  event: string,
  payload?: PayloadMatch,
  options: AssertOptions = {}
): Effect.Effect<void, AssertionFailed, ChannelTest> =>
  Effect.flatMap(recorded, (broadcasts) =>
    Effect.flatMap(within(broadcasts.await(broadcastMatcher(topic, event, payload)), options.timeout), (message) =>
      Option.isSome(message)
        ? fail(`expected no broadcast ${event} to ${topic}, received:\n  ${JSON.stringify(message.value, bytes)}`)
        : Effect.void))

/**
 * Asserts that the server closes the connection (with `code`, when given).
 *
 * @since 0.1.0
 * @category assertions
 */
export const assertClosed = (
  socket: TestSocket,
  code?: number,
  options: AssertOptions = {}
): Effect.Effect<Closed, AssertionFailed> =>
  Effect.flatMap(within(socket.closed, options.timeout), (closed) => {
    if (Option.isNone(closed)) return fail("expected the server to close the connection")
    if (code !== undefined && closed.value.code !== code) {
      return fail(`expected close code ${code}, got ${closed.value.code} (${closed.value.reason})`)
    }
    return Effect.zipRight(Fiber.await(impl(socket).fiber), Effect.succeed(closed.value))
  })

// Presence

type Metas = ReadonlyArray<Presence.TrackedMeta>

/** Applies `presence_state` and `presence_diff` as the JS client's `Presence` does, by `phx_ref`. */
const syncPresence = (presences: Map<string, Presence.State>, message: Push | Broadcast) => {
  if (message.event === "presence_state") {
    presences.set(message.topic, message.payload as Presence.State)
  } else if (message.event === "presence_diff") {
    const { joins, leaves } = message.payload as Presence.Diff
    const state: Record<string, { metas: Metas }> = { ...presences.get(message.topic) }
    for (const [key, { metas }] of Object.entries(joins)) {
      const refs = new Set(metas.map((meta) => meta.phx_ref))
      state[key] = { metas: [...(state[key]?.metas ?? []).filter((meta) => !refs.has(meta.phx_ref)), ...metas] }
    }
    for (const [key, { metas }] of Object.entries(leaves)) {
      const refs = new Set(metas.map((meta) => meta.phx_ref))
      const left = (state[key]?.metas ?? []).filter((meta) => !refs.has(meta.phx_ref))
      if (left.length === 0) delete state[key]
      else state[key] = { metas: left }
    }
    presences.set(message.topic, state)
  }
}

/**
 * The presences of a channel's topic as its client sees them: the last
 * `presence_state` it received, with every `presence_diff` since applied.
 *
 * @since 0.1.0
 * @category presence
 */
export const presenceOf = (channel: TestChannel): Effect.Effect<Presence.State> =>
  Effect.sync(() => impl(channel.socket).presences.get(channel.topic) ?? {})

/**
 * Asserts that, within the timeout, the client's view of the channel's
 * presences has exactly these keys, with these numbers of metas.
 *
 * @since 0.1.0
 * @category presence
 */
export const assertPresence = (
  channel: TestChannel,
  expected: Readonly<Record<string, number>>,
  options: AssertOptions = {}
): Effect.Effect<Presence.State, AssertionFailed> => {
  const counts = () =>
    Object.fromEntries(
      Object.entries(impl(channel.socket).presences.get(channel.topic) ?? {}).map(([key, { metas }]) => [key, metas.length])
    )
  const matches = () => equals(counts(), expected)
  return Effect.flatMap(
    within(impl(channel.socket).mailbox.until(matches), options.timeout),
    (done) =>
      Option.isSome(done)
        ? presenceOf(channel)
        : fail(`expected the presences ${JSON.stringify(expected)}, the client sees ${JSON.stringify(counts())}`)
  )
}

/**
 * Everything the client received so far, in order, asserted or not.
 *
 * @since 0.1.0
 * @category sockets
 */
export const received = (socket: TestSocket): ReadonlyArray<Outbound> => impl(socket).history
