/**
 * The connection runtime: one client connection, whatever its transport.
 *
 * The connection lives in the caller's `Scope` and fiber (the transport's):
 * `run` handles the frames received, in order, until the transport closes;
 * frames for a channel whose fiber is running are handed to it as they
 * arrive, when nothing is queued before them. The events a channel's client
 * pushes are handled in order by a fiber of the channel, forked into the
 * connection's scope, which runs while the channel has work and lingers a
 * second for more (an idle channel costs no fiber). The topic's broadcasts
 * are written directly by the broker's fiber for the topic: the channel is
 * the topic's subscriber. Silence is detected by the broadcaster's registry,
 * which sweeps every connection's last activity (a connection costs no timer
 * of its own).
 *
 * A channel's lifecycle is one `phase` on its object (see `Phase`), and the
 * dispatch rules of a received message are one function, `route`, used by
 * the connection's fiber (`handleFrame`) and by the frames taken at once
 * (`handleAtOnce`) alike.
 *
 * The connection adds one finalizer to its scope, which ends every channel
 * (`leave` runs), closes the transport and runs `disconnect`, whatever ended
 * the connection. A channel ends the same way, without its connection: its
 * fiber is interrupted, it unsubscribes, `leave` runs, and its `scope` (made
 * when a handler first asks for it) is closed.
 *
 * What an idle connection holds is what the benchmark's memory figure
 * counts: the connection, its socket info, one object per channel (its
 * handle, its state and its subscription at once), one set entry per topic,
 * and a parked fiber. Mailboxes, held pushes and channel scopes are made
 * when needed; logs are annotated around the work that logs rather than for
 * the life of the fiber.
 */
import * as Cause from "effect/Cause"
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import { NodeInspectSymbol } from "effect/Inspectable"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Recovery, Subscriber } from "../Broker.js"
import { Broker, Envelope } from "../Broker.js"
import type { Position, UnrecoverablePayload } from "../ChannelHistory.js"
import * as History from "../ChannelHistory.js"
import type { Registration } from "../ChannelBroadcaster.js"
import { ChannelBroadcaster, disconnectEvent } from "../ChannelBroadcaster.js"
import type { ChannelConn, ConnectInfo, JoinResult, LeaveReason, SocketInfo } from "../ChannelConn.js"
import type { ChannelEvent } from "../ChannelEvent.js"
import { InvalidPayload } from "../ChannelEvent.js"
import type { Channel, HandleOut, Incoming } from "../ChannelHandler.js"
import { ChannelHandler } from "../ChannelHandler.js"
import type { FilterParameters, LogLevels } from "../internal/logging.js"
import { formatDuration, logAbove, parametersLine } from "../internal/logging.js"
import { broadcastRefusal, overLimit, refusal } from "../internal/frameSize.js"
import * as Telemetry from "../internal/metrics.js"
import type { Frame, Message, MessageTooLarge, Outbound, Payload, ReplyStatus } from "../protocol/Message.js"
import * as Msg from "../protocol/Message.js"
import type { MalformedMessage, Serializer } from "../protocol/Serializer.js"
import type { Listener, Transport } from "../transport/Transport.js"
import { CloseCode } from "../transport/Transport.js"

/** @internal */
export interface Options {
  readonly heartbeatTimeout: Duration.Duration
  readonly maxChannels: number
  readonly maxFrameSize: number
  readonly maxOutboundSize: number
  readonly outboundBufferLimit: number
  readonly inboundQueueLimit: number
  readonly logLevels: LogLevels
  readonly filterParameters: FilterParameters
}

/** @internal */
export interface Params {
  readonly transport: Transport
  readonly serializer: Serializer
  readonly connectInfo: ConnectInfo
  readonly id: string | undefined
  readonly assigns: Readonly<Record<string, unknown>>
  readonly options: Options
}

/**
 * A connection: the transport tells it each frame received and its close
 * (it is the transport's {@link Listener}), and `run` handles them.
 *
 * @internal
 */
export interface Connection extends Listener {
  /** A unique id of this connection (not the socket id, which several connections may share). */
  readonly id: string
  readonly socket: SocketInfo
  /** Handles received frames until the transport has closed. */
  readonly run: Effect.Effect<void>
}

const node = Math.random().toString(36).slice(2, 10)
const lingerMillis = 1000
/** How long a leave or a duplicate join waits for the events queued before it, as Phoenix's close does. */
const settleMillis = 5000
let counter = 0

type Decoded = Either.Either<Message, MalformedMessage>

/** What a message received asks of the connection (see `route`). */
const Route = { Heartbeat: 0, Join: 1, LeaveUnjoined: 2, Unmatched: 3, Ignore: 4, Leave: 5, Event: 6 } as const
type Route = (typeof Route)[keyof typeof Route]

const frameSize = (frame: Frame) => (typeof frame === "string" ? frame.length : frame.byteLength)

const toEvent = (message: Message): ChannelEvent => ({
  topic: message.topic,
  event: message.event,
  payload: message.payload,
  ref: message.ref,
  joinRef: message.joinRef
})

const isInvalidPayload = (u: unknown): u is InvalidPayload => u instanceof InvalidPayload

const emptyAssigns: Readonly<Record<string, unknown>> = Object.freeze({})

/** The socket as hooks see it; its assigns are copied on the first `assign`. */
class SocketInfoImpl implements SocketInfo {
  private owned = false
  constructor(
    readonly id: Option.Option<string>,
    readonly connectInfo: ConnectInfo,
    public assigns: Record<string, unknown>
  ) {}
  assign(key: string, value: unknown) {
    return Effect.sync(() => {
      if (!this.owned) {
        this.assigns = { ...this.assigns }
        this.owned = true
      }
      this.assigns[key] = value
    })
  }
}

/**
 * A channel's lifecycle: one phase, which only moves forward.
 *
 * - `Joining`: `join` runs. What the channel sends is held, the topic's
 *   broadcasts wait; a refused or failed join goes to `Ended`, without `leave`.
 * - `Allowed`: the join is allowed (`leave` will run). Its reply, then what
 *   was held, are going out; what is sent meanwhile is held behind them.
 * - `Joined`: what the channel sends goes out at once; it handles its
 *   client's events and the broadcasts it intercepts.
 * - `Leaving`: it is ending: it takes no further event; `leave` runs, and
 *   what it sends still goes out (pushes while the transport is open).
 * - `Ended`: nothing goes out; a scope asked for now is made closed.
 */
const Phase = { Joining: 0, Allowed: 1, Joined: 2, Leaving: 3, Ended: 4 } as const
type Phase = (typeof Phase)[keyof typeof Phase]

/** What a channel's fiber handles, in order: its client's events, and the broadcasts it intercepts. */
type Work = ChannelEvent | Envelope

/**
 * A joined (or joining) channel: the handle its hooks receive, its state, and
 * its subscription to the topic at once.
 */
class ChannelImpl implements ChannelConn, Subscriber {
  /**
   * Work to handle, from `head` on: an array, not a queue with O(n) shift.
   * Made with the first work, given back with the fiber: it is defined
   * exactly while the channel's fiber runs or lingers.
   */
  mailbox: Array<Work | undefined> | undefined = undefined
  head = 0
  /** Pushes and broadcasts made during `join`, sent after its reply. */
  held: Array<Effect.Effect<void>> | undefined = undefined
  /** Broadcasts received before the join reply is out. */
  early: Array<Envelope> | undefined = undefined
  ownAssigns: Record<string, unknown> | undefined = undefined
  ownScope: Scope.CloseableScope | undefined = undefined
  /** The fiber handling the mailbox, while it runs or lingers. */
  fiber: Fiber.RuntimeFiber<void> | undefined = undefined
  /** Resumes the channel's fiber while it lingers for the next event. */
  parked: ((resume: Effect.Effect<boolean>) => void) | undefined = undefined
  /** When the fiber last parked, in `Date.now()` milliseconds. */
  parkedAt = 0
  /** The timer that gives the fiber back once it has lingered idle; one per linger, not per event. */
  lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined
  phase: Phase = Phase.Joining
  /** On a topic with a history, the position of the last broadcast delivered (see `inOrder`). */
  cursor: Cursor | undefined = undefined
  /** Why the channel ends, set as it starts `Leaving`. */
  reason: LeaveReason = "disconnected"

  /** The join's ref, which the channel's messages must carry (or none): the `join_ref`, else the join's `ref`. */
  readonly joinRef: string

  constructor(
    readonly connection: ConnectionImpl,
    readonly topic: string,
    /** The `join_ref` the client sent, which the channel's messages carry on the wire, as Phoenix's. */
    readonly wireJoinRef: string | null,
    joinMessageRef: string | null,
    readonly hooks: Channel,
    /** The topic pattern its hooks serve, the label of its metrics. */
    readonly pattern: string
  ) {
    this.joinRef = wireJoinRef ?? joinMessageRef ?? ""
  }

  get socket(): SocketInfo {
    return this.connection.socket
  }
  get scope(): Scope.Scope {
    // Made on first use: most channels never ask. Closed when the channel
    // ends; made closed when asked for after, so that what is added to it
    // runs at once, as with any closed scope.
    if (this.ownScope === undefined) {
      const scope = Effect.runSync(Scope.make())
      if (this.phase === Phase.Ended) Effect.runSync(Scope.close(scope, Exit.void))
      this.ownScope = scope
    }
    return this.ownScope
  }
  allowJoin(response: Payload = {}): JoinResult {
    return { _tag: "Allow", response }
  }
  refuseJoin(reason: Payload): JoinResult {
    return { _tag: "Refuse", reason }
  }
  reply(event: ChannelEvent, status: ReplyStatus, response: Payload = {}) {
    return Effect.suspend(() =>
      event.ref === null || this.phase === Phase.Ended
        ? Effect.void
        : this.connection.sendLimited(Msg.reply(this.wireJoinRef, event.ref, this.topic, status, response), event.event)
    )
  }
  push(event: string, payload: Payload = {}) {
    return this.connection.sendLimited(Msg.push(this.wireJoinRef, this.topic, event, payload), event, this)
  }
  broadcast(event: string, payload: Payload = {}) {
    return this.publish(new Envelope(Msg.broadcast(this.topic, event, payload)))
  }
  broadcastFrom(event: string, payload: Payload = {}) {
    return this.publish(new Envelope(Msg.broadcast(this.topic, event, payload), this.connection.id))
  }
  /** Publishes a broadcast of the channel, refused at the call when it is too large. */
  publish(envelope: Envelope): Effect.Effect<void, MessageTooLarge | UnrecoverablePayload> {
    return Effect.suspend(() => {
      if (this.phase === Phase.Ended) return Effect.void
      const refused = broadcastRefusal(envelope, this.connection.options.maxOutboundSize, this.connection.broker.history)
      if (refused !== undefined) return Effect.fail(refused)
      const publish = this.connection.broker.publish(envelope)
      return this.sends ? publish : this.sendOrHold(publish)
    })
  }
  get leave() {
    return Effect.suspend(() => this.connection.terminateFromWithin(this, "closed"))
  }
  get assigns() {
    return Effect.sync((): Readonly<Record<string, unknown>> => this.ownAssigns ?? emptyAssigns)
  }
  assign(key: string, value: unknown) {
    return Effect.sync(() => {
      ;(this.ownAssigns ??= {})[key] = value
    })
  }
  fork<A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<Fiber.RuntimeFiber<A, E>, never, R> {
    return Effect.suspend(() =>
      Effect.forkIn(
        Effect.onError(effect, (cause) => Cause.isInterruptedOnly(cause) ? Effect.void : this.crashed(cause)),
        this.scope
      )
    )
  }
  subscribe(topic: string): Effect.Effect<void> {
    return Effect.suspend(() => {
      const forward = new Forward(this)
      const { broker } = this.connection
      return Effect.zipRight(
        broker.subscribe(topic, forward),
        Scope.addFinalizer(this.scope, broker.unsubscribe(topic, forward))
      )
    })
  }

  /** A failure of a fiber of the channel's: logged, and once joined, the channel crashes. */
  crashed(cause: Cause.Cause<unknown>): Effect.Effect<void> {
    return Effect.zipRight(
      Effect.logError("channel crashed", cause).pipe(Effect.annotateLogs("topic", this.topic)),
      this.connection.terminateFromWithin(this, "crashed")
    )
  }

  /** Whether what the channel sends goes out now: its join reply is out, and it has not ended. */
  get sends(): boolean {
    return this.phase === Phase.Joined || this.phase === Phase.Leaving
  }

  /** Runs `effect` now while the channel sends, after the join reply while it joins, never once ended. */
  sendOrHold(effect: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.phase === Phase.Joined || this.phase === Phase.Leaving) return effect
      if (this.phase === Phase.Ended) return Effect.void
      ;(this.held ??= []).push(effect)
      return Effect.void
    })
  }

  /**
   * Writes the topic's broadcasts; until the join reply is out, holds them
   * back. Those it intercepts go to its fiber instead, each in its turn.
   */
  deliver(delivered: ReadonlyArray<Envelope>): void {
    // Before the join reply, and while a rejoin's replay goes out (`early` set), held back.
    if (this.phase < Phase.Joined || this.early !== undefined) {
      const early = this.early ??= []
      for (const envelope of delivered) early.push(envelope)
      return
    }
    this.writeNow(delivered)
  }

  /** {@link deliver}'s writing, past its holding back. */
  writeNow(delivered: ReadonlyArray<Envelope>): void {
    if (this.phase === Phase.Ended) return
    const envelopes = this.cursor === undefined ? delivered : this.inOrder(delivered, this.cursor)
    if (envelopes.length === 0) return
    const intercepts = this.hooks.intercepts
    if (intercepts === undefined) return this.connection.writeBroadcasts(envelopes)
    let from = 0
    for (let i = 0; i < envelopes.length; i++) {
      const envelope = envelopes[i]!
      if (!intercepts.has(envelope.message.event) || envelope.except === this.connection.id) continue
      if (i > from) this.connection.writeBroadcasts(envelopes.slice(from, i))
      from = i + 1
      // A leaving channel handles nothing more: what it intercepts is dropped.
      if (this.phase === Phase.Joined) this.connection.intercepted(this, envelope)
    }
    if (from === 0) this.connection.writeBroadcasts(envelopes)
    else if (from < envelopes.length) this.connection.writeBroadcasts(envelopes.slice(from))
  }

  /**
   * The broadcasts of a topic with a history that follow the last one
   * delivered: those it has had already (replayed, then received live) are
   * dropped. A position skipped, or another epoch, means the stream lost
   * something: the channel delivers nothing more, and ends so that its
   * client rejoins and recovers. Envelopes without a position (presence
   * diffs) pass.
   */
  inOrder(envelopes: ReadonlyArray<Envelope>, cursor: Cursor): ReadonlyArray<Envelope> {
    let kept: Array<Envelope> | undefined
    for (let i = 0; i < envelopes.length; i++) {
      const envelope = envelopes[i]!
      const position = envelope.position
      if (position === undefined || (position.epoch === cursor.epoch && position.offset === cursor.offset + 1)) {
        if (position !== undefined) cursor.offset++
        kept?.push(envelope)
        continue
      }
      kept ??= envelopes.slice(0, i)
      if (position.epoch === cursor.epoch && position.offset <= cursor.offset) continue
      cursor.offset = Number.POSITIVE_INFINITY
      if (this.phase === Phase.Joined) this.connection.resync(this)
      return kept
    }
    return kept ?? envelopes
  }

  /** Annotates the logs of the channel's own fiber, for good: the fiber is the channel's. */
  get annotate(): Effect.Effect<void> {
    return FiberRef.update(
      FiberRef.currentLogAnnotations,
      (annotations) => HashMap.set(HashMap.set(annotations, "socket_id", this.connection.logId), "topic", this.topic)
    )
  }

  toJSON() {
    return { _id: "ChannelConn", topic: this.topic, joinRef: this.joinRef, phase: phaseNames[this.phase] }
  }
  [NodeInspectSymbol]() {
    return this.toJSON()
  }
}

const phaseNames = ["joining", "allowed", "joined", "leaving", "ended"] as const

/** Where a channel stands in its topic's history: mutable, advanced as broadcasts are delivered. */
class Cursor {
  constructor(readonly epoch: string, public offset: number) {}
}

/** A channel whose topic's stream lost something, to end through the connection's fiber. */
class Resync {
  constructor(readonly channel: ChannelImpl) {}
}

/**
 * The join params without the position, which the handler does not see, and
 * the position (see `ChannelHistory`).
 */
const splitPosition = (payload: Payload): { readonly payload: Payload; readonly since: Position | undefined } => {
  if (typeof payload !== "object" || payload === null || Array.isArray(payload) || Msg.isBinary(payload)) {
    return { payload, since: undefined }
  }
  if (!(History.positionField in payload)) return { payload, since: undefined }
  const { [History.positionField]: position, ...rest } = payload as Record<string, unknown>
  return { payload: rest, since: History.parse(position) }
}

/** A join reply's response with what a recovery tells the client; a response that is not an object is sent as it is. */
const withRecovery = (response: Payload, position: Position | undefined, recovered: boolean): Payload => {
  if (typeof response !== "object" || response === null || Array.isArray(response) || Msg.isBinary(response)) {
    return response
  }
  return position === undefined
    ? { ...response, [History.recoveredField]: recovered }
    : { ...response, [History.positionField]: History.format(position), [History.recoveredField]: recovered }
}

/**
 * A channel's subscription to another topic (`conn.subscribe`): what is
 * broadcast there is pushed to the client on the channel's topic, while the
 * channel sends.
 */
class Forward implements Subscriber {
  constructor(readonly channel: ChannelImpl) {}
  deliver(envelopes: ReadonlyArray<Envelope>): void {
    const { channel } = this
    if (channel.phase === Phase.Ended) return
    const connection = channel.connection
    for (const envelope of envelopes) {
      if (envelope.except === connection.id) continue
      const { event, payload } = envelope.message
      const push = Msg.push(channel.wireJoinRef, channel.topic, event, payload)
      // Subscribed in `join`: what comes before the join reply is held with the channel's own pushes.
      if (channel.phase < Phase.Joined) {
        ;(channel.held ??= []).push(connection.send(push))
        continue
      }
      const frame = connection.serializer.encode(push)
      if (Either.isRight(frame)) connection.write(frame.right)
    }
  }
}

/** The end of what a channel handles before it stops (see `settle`): never a client's event. */
const settleMark: ChannelEvent = Object.freeze({ topic: "", event: Msg.Events.leave, payload: null, ref: null, joinRef: null })

/** Resumes a channel's parked fiber: an event came. */
const wakeUp = (channel: ChannelImpl) => {
  const resume = channel.parked!
  channel.parked = undefined
  resume(Effect.succeed(true))
}

const armLinger = (channel: ChannelImpl, millis: number) => {
  channel.lingerTimer = setTimeout(lingerOver, millis, channel)
}

/** The linger timer: gives the fiber back if it has been parked for `lingerMillis`, or waits the rest. */
const lingerOver = (channel: ChannelImpl) => {
  channel.lingerTimer = undefined
  const resume = channel.parked
  if (resume === undefined) return
  const idle = Date.now() - channel.parkedAt
  if (idle < lingerMillis) return armLinger(channel, lingerMillis - idle)
  channel.parked = undefined
  resume(Effect.succeed(false))
}

const stopLinger = (channel: ChannelImpl) => {
  if (channel.lingerTimer !== undefined) {
    clearTimeout(channel.lingerTimer)
    channel.lingerTimer = undefined
  }
}

/** An intercepted broadcast for a channel whose fiber is to be started, queued with the frames. */
class Intercepted {
  constructor(readonly channel: ChannelImpl, readonly envelope: Envelope) {}
}

class ConnectionImpl implements Connection, Registration {
  readonly id = `${node}.${++counter}`
  readonly socket: SocketInfoImpl
  readonly transport: Transport
  readonly serializer: Serializer
  readonly options: Options
  readonly heartbeatMillis: number
  readonly channels = new Map<string, ChannelImpl>()
  /** Frames received and not handled yet; made when a frame has to wait. */
  inbox: Array<Decoded | Intercepted | Resync> | undefined = undefined
  transportOpen = true
  /** Wakes the connection's fiber while it waits for frames. */
  wakeRun: (() => void) | undefined = undefined
  lastReceived: number
  closed = false
  socketSubscriber: SocketIdSubscriber | undefined = undefined

  constructor(
    params: Params,
    readonly handler: ChannelHandler["Type"],
    readonly broker: Broker["Type"],
    readonly broadcaster: ChannelBroadcaster["Type"],
    readonly telemetry: Telemetry.Telemetry,
    readonly scope: Scope.Scope,
    readonly clock: Clock.Clock
  ) {
    this.transport = params.transport
    this.serializer = params.serializer
    this.options = params.options
    this.heartbeatMillis = Duration.toMillis(params.options.heartbeatTimeout)
    this.lastReceived = clock.unsafeCurrentTimeMillis()
    const assigns = params.assigns as Record<string, unknown>
    this.socket = new SocketInfoImpl(
      Option.fromNullable(params.id),
      params.connectInfo,
      Object.keys(assigns).length === 0 ? emptyAssigns as Record<string, unknown> : assigns
    )
  }

  /** The socket id in logs: `socket_id` is annotated around the work that may log. */
  get logId(): string | null {
    return Option.getOrNull(this.socket.id)
  }

  // Writing

  close(code: number, reason: string): void {
    if (this.closed) return
    this.closed = true
    this.telemetry.recorder.closed(this.transportOpen ? code : "remote")
    this.transport.close(code, reason)
  }

  /** Drops a client that does not read: its close frame would wait behind what it does not read. */
  dropSlowClient(): void {
    if (this.closed) return
    this.closed = true
    this.telemetry.recorder.slowClientDropped()
    this.transport.abort()
  }

  /** Whether the client takes what is written: past the bound, it is disconnected. */
  writable(): boolean {
    // A transport closed by the client takes nothing more: what a `leave` pushes then goes nowhere.
    if (this.closed || !this.transportOpen) return false
    if (this.transport.bufferedAmount() <= this.options.outboundBufferLimit) return true
    this.dropSlowClient()
    return false
  }

  write(frame: Frame): void {
    if (!this.writable()) return
    this.transport.send(frame)
    this.telemetry.recorder.sent(frame)
  }

  send(message: Outbound): Effect.Effect<void> {
    return Effect.suspend(() => {
      const frame = this.serializer.encode(message)
      if (Either.isLeft(frame)) return Effect.annotateLogs(Effect.logWarning("message dropped"), "reason", frame.left.reason)
      this.write(frame.right)
      return Effect.void
    })
  }

  /**
   * Sends what a handler pushes or replies, encoded at the call and refused
   * there when over `maxOutboundSize`. A push (`of` its channel) is sent
   * after the join reply while the join runs, and not once the channel ended.
   */
  sendLimited(message: Outbound, event: string, of?: ChannelImpl): Effect.Effect<void, MessageTooLarge> {
    return Effect.suspend(() => {
      if (of?.phase === Phase.Ended) return Effect.void
      const frame = this.serializer.encode(message)
      if (Either.isLeft(frame)) return Effect.annotateLogs(Effect.logWarning("message dropped"), "reason", frame.left.reason)
      const refused = refusal(frame.right, message.topic, event, this.options.maxOutboundSize)
      if (refused !== undefined) return Effect.fail(refused)
      if (of === undefined || of.sends) this.write(frame.right)
      else (of.held ??= []).push(Effect.sync(() => this.write(frame.right)))
      return Effect.void
    })
  }

  sendError(message: Message, joinRef: string | null, reason: Payload): Effect.Effect<void> {
    return this.send(Msg.reply(joinRef, message.ref, message.topic, "error", reason))
  }

  /** Writes a topic's broadcasts, but those this connection sent with `broadcastFrom`. */
  writeBroadcasts(envelopes: ReadonlyArray<Envelope>): void {
    if (!this.writable()) return
    const { id, serializer, transport } = this
    const { recorder } = this.telemetry
    if (envelopes.length === 1) {
      const envelope = envelopes[0]!
      if (envelope.except === id) return
      const frame = envelope.frame(serializer)
      if (Either.isRight(frame)) {
        transport.send(frame.right)
        recorder.broadcastWritten(envelope, serializer)
      }
      return
    }
    // Within the bound: past it, what fits is written and the client dropped.
    const room = this.options.outboundBufferLimit - transport.bufferedAmount()
    const frames: Array<Frame> = []
    let size = 0
    for (const envelope of envelopes) {
      if (envelope.except === id) continue
      const frame = envelope.frame(serializer)
      if (Either.isLeft(frame)) continue
      size += frameSize(frame.right)
      if (size > room && frames.length > 0) {
        transport.sendAll(frames)
        return this.dropSlowClient()
      }
      frames.push(frame.right)
      recorder.broadcastWritten(envelope, serializer)
    }
    transport.sendAll(frames)
  }

  /**
   * Writes a rejoin's missed broadcasts in turns that fit within
   * `outboundBufferLimit`, each once the client has taken most of the one
   * before, so that a replay larger than the bound is not taken for a slow
   * client. A client that takes nothing of it for `heartbeatTimeout` is
   * dropped as slow.
   */
  replay(channel: ChannelImpl, envelopes: ReadonlyArray<Envelope>): Effect.Effect<void> {
    const limit = this.options.outboundBufferLimit
    let from = 0
    const turn: Effect.Effect<void> = Effect.suspend(() => {
      if (channel.phase === Phase.Ended || !this.writable()) return Effect.void
      const room = limit - this.transport.bufferedAmount()
      let size = 0
      let to = from
      while (to < envelopes.length) {
        const frame = envelopes[to]!.frame(this.serializer)
        if (Either.isRight(frame)) size += frameSize(frame.right)
        if (size > room && to > from) break
        to++
      }
      channel.writeNow(from === 0 && to === envelopes.length ? envelopes : envelopes.slice(from, to))
      from = to
      return from < envelopes.length ? Effect.zipRight(this.taken(limit / 2), turn) : Effect.void
    })
    return turn
  }

  /** Waits until at most `bytes` are left unsent; past `heartbeatTimeout`, drops the client as slow. */
  taken(bytes: number): Effect.Effect<void> {
    const every = 10
    let left = Math.ceil(Duration.toMillis(this.options.heartbeatTimeout) / every)
    const check: Effect.Effect<void> = Effect.suspend(() => {
      if (!this.writable() || this.transport.bufferedAmount() <= bytes) return Effect.void
      if (left-- <= 0) return Effect.sync(() => this.dropSlowClient())
      return Effect.zipRight(Effect.sleep(every), check)
    })
    return check
  }

  // Channels

  /**
   * Ends a channel's work, uninterruptibly, so that `leave` runs once:
   * interrupts its fiber, unsubscribes, runs `leave` for an allowed join
   * (while the channel is `Leaving`, so that what `leave` sends goes out),
   * then the channel is `Ended` and its scope closed.
   */
  release(channel: ChannelImpl): Effect.Effect<void> {
    return Effect.uninterruptible(Effect.suspend(() => {
      const steps: Array<Effect.Effect<void>> = []
      const fiber = channel.fiber
      channel.fiber = undefined
      channel.parked = undefined
      channel.mailbox = undefined
      stopLinger(channel)
      if (fiber !== undefined) steps.push(Effect.asVoid(Fiber.interrupt(fiber)))
      steps.push(this.broker.unsubscribe(channel.topic, channel))
      if (channel.phase !== Phase.Joining) {
        this.telemetry.recorder.channelLeft(channel.pattern)
        channel.phase = Phase.Leaving
        steps.push(
          Effect.suspend(() => channel.hooks.leave(channel, channel.reason)).pipe(
            Effect.catchAllCause((cause) => Effect.logError("leave failed", cause)),
            Effect.annotateLogs("topic", channel.topic)
          )
        )
      }
      steps.push(Effect.suspend(() => {
        channel.phase = Phase.Ended
        return channel.ownScope === undefined ? Effect.void : Scope.close(channel.ownScope, Exit.void)
      }))
      return Effect.all(steps, { discard: true })
    }))
  }

  /**
   * Ends a channel of this connection, once, and tells its client: what
   * `leave` sends, then (for a `phx_leave`, whose ref is `leaveRef`) the
   * `ok` reply, then `phx_close`, or `phx_error` for a crash. A channel the
   * connection no longer holds is ended already, or by someone else.
   */
  terminate(channel: ChannelImpl, reason: LeaveReason, leaveRef: string | null | undefined = undefined): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.channels.get(channel.topic) !== channel) return Effect.void
      this.channels.delete(channel.topic)
      if (channel.phase < Phase.Leaving) channel.reason = reason
      const joinRef = channel.wireJoinRef
      const notice = channel.reason === "crashed" || channel.reason === "resync"
        ? Msg.push(
          joinRef,
          channel.topic,
          Msg.Events.error,
          { reason: channel.reason === "crashed" ? "channel_crash" : "resync" },
          joinRef
        )
        : Msg.push(joinRef, channel.topic, Msg.Events.close, {}, joinRef)
      const release = this.release(channel)
      return Effect.zipRight(
        leaveRef === undefined
          ? release
          : Effect.zipRight(release, this.send(Msg.reply(joinRef, leaveRef, channel.topic, "ok", {}))),
        this.send(notice)
      )
    })
  }

  /**
   * Terminates a joined channel from one of its own fibers (or a fiber of
   * its scope), which the termination interrupts: the channel is `Leaving`
   * at once, and takes no further event, though it ends in another fiber.
   */
  terminateFromWithin(channel: ChannelImpl, reason: LeaveReason): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (channel.phase !== Phase.Joined) return Effect.void
      channel.phase = Phase.Leaving
      channel.reason = reason
      return Effect.asVoid(Effect.forkIn(this.terminate(channel, reason), this.scope))
    })
  }

  /** A failure of a hook run by the channel's fiber: an invalid payload is answered, anything else crashes the channel. */
  failed(channel: ChannelImpl, event: ChannelEvent | undefined, cause: Cause.Cause<unknown>): Effect.Effect<void> {
    if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
    const failure = Option.getOrUndefined(Cause.failureOption(cause))
    if (event !== undefined && isInvalidPayload(failure)) {
      // The error's message may quote the payload: too large, the reply says less.
      return Effect.catchAll(channel.reply(event, "error", failure.response), () =>
        this.send(Msg.reply(channel.wireJoinRef, event.ref, channel.topic, "error", { reason: "invalid payload" })))
    }
    return Effect.zipRight(Effect.logError("channel crashed", cause), this.terminateFromWithin(channel, "crashed"))
  }

  handleIncoming(
    channel: ChannelImpl,
    incoming: Incoming,
    event: ChannelEvent,
    logLevel: LogLevel.LogLevel | undefined
  ): Effect.Effect<void> {
    const traced = this.telemetry.tracing
      ? Telemetry.eventSpan(incoming(channel, event), channel.topic, event.event)
      : incoming(channel, event)
    const handled = Effect.catchAllCause(traced, (cause) => this.failed(channel, event, cause))
    if (logLevel === undefined) return handled
    return Effect.suspend(() => {
      const start = performance.now()
      return Effect.zipRight(
        handled,
        Effect.suspend(() =>
          Effect.logWithLevel(
            logLevel,
            `HANDLED ${event.event} INCOMING ON ${channel.topic} in ${formatDuration(performance.now() - start)}${
              parametersLine(event.payload, this.options.filterParameters)
            }`
          )
        )
      )
    })
  }

  /** An intercepted broadcast, through `handleOut`: what it returns is pushed to this client alone. */
  handleOut(channel: ChannelImpl, handleOut: HandleOut, envelope: Envelope): Effect.Effect<void> {
    const { event, payload } = envelope.message
    return Effect.matchCauseEffect(handleOut(channel, event, payload), {
      onFailure: (cause) => this.failed(channel, undefined, cause),
      // What `handleOut` returns is the handler's: too large, it fails the handler, as a push would.
      // On a topic with a history, the push carries the broadcast's position, as the broadcast would.
      onSuccess: (out) =>
        Option.isSome(out)
          ? Effect.catchAll(
            envelope.position === undefined
              ? channel.push(event, out.value)
              : this.sendLimited(
                Msg.push(channel.wireJoinRef, channel.topic, event, out.value, History.format(envelope.position)),
                event,
                channel
              ),
            (error) => this.failed(channel, undefined, Cause.fail(error))
          )
          : Effect.void
    })
  }

  /**
   * A broadcast a channel intercepts, from the topic's fiber: to the
   * channel's fiber when it runs; else through the connection's fiber,
   * which starts one, in order with the frames before it.
   */
  intercepted(channel: ChannelImpl, envelope: Envelope): void {
    if (this.closed) return
    const mailbox = channel.mailbox
    if (mailbox !== undefined) {
      if (mailbox.length - channel.head >= this.options.inboundQueueLimit) {
        return this.close(CloseCode.tryAgainLater, "too many broadcasts queued")
      }
      mailbox.push(envelope)
      if (channel.parked !== undefined) wakeUp(channel)
      return
    }
    const inbox = this.inbox ??= []
    if (inbox.length >= this.options.inboundQueueLimit) {
      return this.close(CloseCode.tryAgainLater, "too many broadcasts queued")
    }
    inbox.push(new Intercepted(channel, envelope))
    this.wakeRun?.()
  }

  /**
   * Ends a channel whose topic's stream lost something (from the topic's
   * fiber): it is `Leaving` at once, and ends through the connection's
   * fiber, in order with the frames before.
   */
  resync(channel: ChannelImpl): void {
    channel.phase = Phase.Leaving
    channel.reason = "resync"
    ;(this.inbox ??= []).push(new Resync(channel))
    this.wakeRun?.()
  }

  /**
   * Waits for the next event of an idle channel, for a while: a channel that
   * keeps receiving keeps its fiber; one idle for `lingerMillis` lets it go.
   * Succeeds with whether an event came. One timer serves a whole linger,
   * however many events wake the fiber meanwhile: it is armed when none is,
   * and when it fires early (the fiber parked again since), it is armed for
   * the rest. (A timer of the machine, not of the `Clock`: it only decides
   * when a fiber is given back, nothing anyone sees.) No canceler: a channel
   * that ends drops `parked` and the timer.
   */
  awaitEvent(channel: ChannelImpl): Effect.Effect<boolean> {
    return Effect.async<boolean>((resume) => {
      channel.parked = resume
      channel.parkedAt = Date.now()
      if (channel.lingerTimer === undefined) armLinger(channel, lingerMillis)
    })
  }

  /**
   * Handles a channel's work in order, in the channel's fiber, which ends
   * once it has lingered idle, or once the channel stops taking events.
   * Whether events are logged is read once per fiber, not per event.
   */
  runMailbox(channel: ChannelImpl): Effect.Effect<void> {
    const connection = this
    return Effect.zipRight(
      channel.annotate,
      channel.hooks.handleEvents((incoming, handleOut) =>
        Effect.gen(function*() {
          const eventLevel = connection.options.logLevels.event
          const logLevel = eventLevel !== undefined &&
              LogLevel.greaterThanEqual(eventLevel, yield* FiberRef.get(FiberRef.currentMinimumLogLevel))
            ? eventLevel
            : undefined
          while (channel.phase === Phase.Joined) {
            const mailbox = channel.mailbox!
            if (channel.head === mailbox.length) {
              mailbox.length = channel.head = 0
              // Events that came while the linger ended are in the mailbox: the
              // check and the release are one step.
              if (!(yield* connection.awaitEvent(channel)) && mailbox.length === 0) break
              continue
            }
            const work = mailbox[channel.head]!
            mailbox[channel.head++] = undefined
            if (work === settleMark) break
            yield* work instanceof Envelope
              ? connection.handleOut(channel, handleOut, work)
              : connection.handleIncoming(channel, incoming, work, logLevel)
          }
          // Given back: an idle channel keeps neither its fiber, nor its mailbox, nor a timer.
          stopLinger(channel)
          channel.fiber = undefined
          channel.mailbox = undefined
          channel.head = 0
        })
      )
    )
  }

  /**
   * Lets a channel handle the events its client pushed before a leave or a
   * duplicate join, as Phoenix's channel process does before it stops: the
   * channel's fiber ends at a mark put after them, within `settleMillis`
   * (then it is interrupted with the channel). The connection's fiber waits,
   * so what follows stays in order.
   */
  settle(channel: ChannelImpl): Effect.Effect<void> {
    return Effect.suspend(() => {
      const fiber = channel.fiber
      const mailbox = channel.mailbox
      if (mailbox === undefined || fiber === undefined) return Effect.void
      mailbox.push(settleMark)
      if (channel.parked !== undefined) wakeUp(channel)
      return Effect.ignore(Effect.timeout(Fiber.await(fiber), settleMillis))
    })
  }

  /** Gives a joined channel work: to its fiber if it runs, else to a fiber started for it. */
  enqueue(channel: ChannelImpl, work: Work): Effect.Effect<void> {
    if (channel.phase !== Phase.Joined) return Effect.void
    const mailbox = channel.mailbox
    if (mailbox !== undefined) {
      if (mailbox.length - channel.head >= this.options.inboundQueueLimit) {
        return Effect.sync(() => this.close(CloseCode.policyViolation, "too many messages queued"))
      }
      mailbox.push(work)
      if (channel.parked !== undefined) wakeUp(channel)
      return Effect.void
    }
    channel.mailbox = [work]
    return Effect.map(Effect.forkIn(this.runMailbox(channel), this.scope), (fiber) => {
      // A fiber that has already ended is not kept.
      if (channel.mailbox !== undefined && channel.phase === Phase.Joined) channel.fiber = fiber
    })
  }

  /** Counts a join's result, and notes it on the join's span. */
  joinResult(result: Telemetry.JoinResult, pattern: string): Effect.Effect<void> {
    this.telemetry.recorder.join(result, pattern)
    return this.telemetry.tracing ? Telemetry.annotateJoin(result, pattern) : Effect.void
  }

  /** The join log, as Phoenix writes it: the result, the topic, the time taken, the filtered params. */
  logJoin(message: Message, result: "JOINED" | "REFUSED JOIN", start: number): Effect.Effect<void> {
    const level = this.options.logLevels.join
    if (level === undefined) return Effect.void
    return logAbove(level, () =>
      Effect.logWithLevel(
        level,
        `${result} ${message.topic} in ${formatDuration(performance.now() - start)}${
          parametersLine(message.payload, this.options.filterParameters)
        }`
      ))
  }

  join(message: Message): Effect.Effect<void> {
    const connection = this
    const { topic } = message
    return Effect.gen(function*() {
      const existing = connection.channels.get(topic)
      if (existing !== undefined) {
        yield* Effect.logDebug("duplicate join: closing the existing channel")
        yield* connection.settle(existing)
        yield* connection.terminate(existing, "duplicate")
      }
      const hooks = connection.handler.channel(topic)
      if (hooks === undefined) {
        yield* Effect.logDebug("join to an unmatched topic")
        yield* connection.joinResult("refused", Telemetry.unmatched)
        // As Phoenix's `encode_ignore`: no join ref, whatever the join carried.
        return yield* connection.sendError(message, null, { reason: "unmatched topic" })
      }
      const pattern = hooks.pattern ?? Telemetry.anyTopic
      if (connection.channels.size >= connection.options.maxChannels) {
        yield* connection.joinResult("refused", pattern)
        return yield* connection.sendError(message, message.joinRef, { reason: "too many channels joined" })
      }
      const channel = new ChannelImpl(connection, topic, message.joinRef, message.ref, hooks, pattern)
      const history = connection.broker.history.enabled ? connection.broker.history.of(topic) : undefined
      const split = history === undefined ? undefined : splitPosition(message.payload)
      const joinEvent = split === undefined ? toEvent(message) : { ...toEvent(message), payload: split.payload }
      // The join log's duration: no clock read when joins are not logged.
      const start = connection.options.logLevels.join === undefined ? 0 : performance.now()
      // Subscribed before `join` runs, so that every broadcast published after
      // the hook read something (a presence state) reaches the client, after
      // the pushes made during `join`. Only the hook is interruptible: once
      // subscribed, the channel is held by the connection (whose finalizer
      // ends it) or released, even when the connection ends during `join`.
      const released = (exit: Exit.Exit<JoinResult, unknown>) => Effect.as(connection.release(channel), exit)
      const exit = yield* Effect.uninterruptibleMask((restore) =>
        Effect.zipRight(
          connection.broker.subscribe(topic, channel),
          // One frame under the hook for its exit, whichever it is.
          Effect.matchCauseEffect(restore(hooks.join(channel, joinEvent)), {
            onFailure: (cause) => released(Exit.failCause(cause)),
            onSuccess: (result) => {
              if (result._tag === "Refuse") return released(Exit.succeed(result))
              connection.channels.set(topic, channel)
              channel.phase = Phase.Allowed
              connection.telemetry.recorder.channelJoined(pattern)
              return Effect.succeed(Exit.succeed(result))
            }
          })
        )
      )
      if (Exit.isFailure(exit) || exit.value._tag === "Refuse") {
        yield* connection.logJoin(message, "REFUSED JOIN", start)
        if (Exit.isSuccess(exit)) {
          yield* connection.joinResult("refused", pattern)
          return yield* connection.sendError(
            message,
            message.joinRef,
            exit.value._tag === "Refuse" ? exit.value.reason : {}
          )
        }
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure) && isInvalidPayload(failure.value)) {
          yield* connection.joinResult("refused", pattern)
          return yield* connection.sendError(message, message.joinRef, failure.value.response)
        }
        yield* Effect.logError("join crashed", exit.cause)
        yield* connection.joinResult("crashed", pattern)
        return yield* connection.sendError(message, message.joinRef, { reason: "join crashed" })
      }
      yield* connection.joinResult("allowed", pattern)
      yield* connection.logJoin(message, "JOINED", start)
      let response = exit.value.response
      let missed: ReadonlyArray<Envelope> | undefined
      if (split !== undefined) {
        const since = split.since
        const recovery: Recovery | undefined = yield* connection.broker.recover(topic, since)
        const position = recovery?.position
        missed = since === undefined ? undefined : recovery?.missed
        const recovered = missed !== undefined
        // From where the stream goes on: after what the client had, when it recovers.
        const from = recovered ? since : position
        if (from !== undefined) channel.cursor = new Cursor(from.epoch, from.offset)
        response = withRecovery(response, from, recovered)
      }
      yield* connection.send(Msg.reply(message.joinRef, message.ref, topic, "ok", response))
      while (channel.held !== undefined) {
        const held = channel.held
        channel.held = undefined
        yield* Effect.all(held, { discard: true })
      }
      if (channel.phase !== Phase.Allowed) return
      channel.phase = Phase.Joined
      // What the client missed, then what came during the join and the
      // replay (held in `early` until then): the cursor drops what both hold.
      if (missed !== undefined && missed.length > 0) {
        channel.early ??= []
        yield* connection.replay(channel, missed)
      }
      const early = channel.early
      channel.early = undefined
      if (early !== undefined) channel.deliver(early)
    }).pipe(Effect.annotateLogs({ socket_id: this.logId, topic }))
  }

  // Frames

  /**
   * What a message received asks for: the dispatch rules, in one place, for
   * the connection's fiber and for the frames taken at once. A message for a
   * topic with no channel is unmatched (a `phx_leave` is answered `ok`); one
   * with a stale join ref, or for a channel that is ending, is ignored.
   */
  route(message: Message, channel: ChannelImpl | undefined): Route {
    if (message.event === Msg.Events.heartbeat && message.topic === Msg.socketTopic) return Route.Heartbeat
    if (message.event === Msg.Events.join) return Route.Join
    if (channel === undefined) return message.event === Msg.Events.leave ? Route.LeaveUnjoined : Route.Unmatched
    if ((message.joinRef !== null && message.joinRef !== channel.joinRef) || channel.phase !== Phase.Joined) {
      return Route.Ignore
    }
    return message.event === Msg.Events.leave ? Route.Leave : Route.Event
  }

  handleFrame(decoded: Decoded | Intercepted | Resync): Effect.Effect<void> {
    if (decoded instanceof Intercepted) return this.enqueue(decoded.channel, decoded.envelope)
    if (decoded instanceof Resync) {
      return Effect.zipRight(
        Effect.annotateLogs(Effect.logWarning("broadcasts lost under the channel: its client rejoins to recover"), {
          socket_id: this.logId,
          topic: decoded.channel.topic
        }),
        this.terminate(decoded.channel, "resync")
      )
    }
    if (Either.isLeft(decoded)) {
      return Effect.zipRight(
        Effect.annotateLogs(Effect.logWarning("closing on a malformed frame"), "reason", decoded.left.reason),
        Effect.sync(() => this.close(CloseCode.invalidPayload, decoded.left.reason))
      ).pipe(Effect.annotateLogs("socket_id", this.logId))
    }
    const message = decoded.right
    const channel = this.channels.get(message.topic)
    switch (this.route(message, channel)) {
      case Route.Heartbeat:
        return this.send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
      case Route.Join:
        return this.telemetry.tracing ? Telemetry.joinSpan(this.join(message), message.topic) : this.join(message)
      case Route.LeaveUnjoined:
        return this.send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
      case Route.Unmatched:
        // As Phoenix's `encode_ignore`: no join ref.
        return this.sendError(message, null, { reason: "unmatched topic" })
      case Route.Ignore:
        return Effect.void
      case Route.Leave:
        return Effect.zipRight(this.settle(channel!), this.terminate(channel!, "left", message.ref))
      case Route.Event:
        return this.enqueue(channel!, toEvent(message))
    }
  }

  /**
   * Handles `frames` from `index` on, then goes on with the loop: no frame
   * of the loop's own stays under a frame's handling (and the hooks it runs).
   */
  handleEach(frames: Array<Decoded | Intercepted | Resync>, index: number): Effect.Effect<void> {
    return index === frames.length || this.closed
      ? this.run
      : Effect.flatMap(this.handleFrame(frames[index]!), () => this.handleEach(frames, index + 1))
  }

  /**
   * Handles the frames received, until the transport has closed. A loop of
   * effects, not a generator; parked, it holds no frame of its own: the
   * wake-up resumes the fiber with the rest of the loop. No canceler: an
   * interrupted fiber ignores a later wake-up, and costs less parked
   * without one.
   */
  get run(): Effect.Effect<void> {
    return Effect.suspend(() => {
      const inbox = this.inbox
      if (inbox !== undefined) {
        this.inbox = undefined
        this.lastReceived = this.clock.unsafeCurrentTimeMillis()
        return this.handleEach(inbox, 0)
      }
      if (!this.transportOpen) return Effect.void
      return Effect.async<void>((resume) => {
        this.wakeRun = () => {
          this.wakeRun = undefined
          resume(this.run)
        }
      })
    })
  }

  /**
   * The frames handled as they arrive, without waking the connection's
   * fiber, by the same rules: heartbeats, and the events and stale messages
   * of a channel whose fiber is running or lingering (with room in its
   * mailbox). Anything else (joins, leaves, errors, a channel that needs a
   * fiber) goes through the connection's fiber, and so does everything while
   * it has frames queued, which keeps the order of every message.
   */
  handleAtOnce(decoded: Decoded): boolean {
    if (Either.isLeft(decoded)) return false
    const message = decoded.right
    const channel = this.channels.get(message.topic)
    const route = this.route(message, channel)
    if (route === Route.Heartbeat) {
      this.lastReceived = this.clock.unsafeCurrentTimeMillis()
      const frame = this.serializer.encode(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
      if (Either.isRight(frame)) this.write(frame.right)
      return true
    }
    const mailbox = channel?.mailbox
    if (mailbox === undefined || (route !== Route.Event && route !== Route.Ignore)) return false
    if (mailbox.length - channel!.head >= this.options.inboundQueueLimit) return false
    this.lastReceived = this.clock.unsafeCurrentTimeMillis()
    if (route === Route.Ignore) return true
    mailbox.push(toEvent(message))
    if (channel!.parked !== undefined) wakeUp(channel!)
    return true
  }

  // Listener

  onFrame(frame: Frame): void {
    if (this.closed) return
    this.telemetry.recorder.received()
    if (overLimit(frame, this.options.maxFrameSize)) {
      return this.close(CloseCode.messageTooBig, "frame too large")
    }
    const decoded = this.serializer.decode(frame)
    if (this.inbox === undefined && this.wakeRun !== undefined && this.handleAtOnce(decoded)) return
    const inbox = this.inbox ??= []
    if (inbox.length >= this.options.inboundQueueLimit) {
      return this.close(CloseCode.policyViolation, "too many messages queued")
    }
    inbox.push(decoded)
    this.wakeRun?.()
  }

  onClose(): void {
    this.transportOpen = false
    this.wakeRun?.()
  }

  // Registration

  lastActivity(): number {
    return this.lastReceived
  }

  expire(): void {
    this.close(CloseCode.normal, "heartbeat timeout")
  }


  /**
   * Adds the connection's finalizer to its scope: to the scope itself, as
   * `Effect.addFinalizer` would keep a copy of the fiber's refs with it.
   */
  get addFinalizer(): Effect.Effect<void> {
    // Counted open in the same uninterruptible step as the finalizer that counts it closed.
    return Effect.uninterruptible(Effect.suspend(() => {
      this.telemetry.recorder.connectionOpened(this.socket.connectInfo.transport)
      return Scope.addFinalizerExit(this.scope, () => this.finalize)
    }))
  }

  /**
   * The connection's one finalizer: every channel ends (the last joined
   * first), then the transport is closed, then `disconnect` runs, and the
   * connection is forgotten.
   */
  get finalize(): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.telemetry.recorder.connectionClosed(this.socket.connectInfo.transport)
      const channels = Array.from(this.channels.values()).reverse()
      this.channels.clear()
      // A channel already leaving (its termination forked, not started) keeps its reason.
      for (const channel of channels) if (channel.phase < Phase.Leaving) channel.reason = "disconnected"
      return Effect.forEach(channels, (channel) => this.release(channel), { discard: true }).pipe(
        Effect.zipRight(
          this.socketSubscriber === undefined
            ? Effect.void
            : this.broker.unsubscribe(this.socketSubscriber.topic, this.socketSubscriber)
        ),
        Effect.zipRight(Effect.sync(() => this.close(CloseCode.goingAway, "server shutting down"))),
        Effect.zipRight(
          Effect.catchAllCause(
            Effect.suspend(() => this.handler.disconnect(this.socket)),
            (cause) => Effect.logError("disconnect failed", cause)
          )
        ),
        Effect.zipRight(this.broadcaster.unregister(this)),
        Effect.annotateLogs("socket_id", this.logId)
      )
    })
  }
}

/** The subscriber to the socket id's topic, which `ChannelBroadcaster.disconnect` publishes to. */
class SocketIdSubscriber implements Subscriber {
  constructor(readonly connection: ConnectionImpl, readonly topic: string) {}
  deliver(envelopes: ReadonlyArray<Envelope>): void {
    if (envelopes.some((envelope) => envelope.message.event === disconnectEvent)) {
      this.connection.close(CloseCode.goingAway, "disconnected by the server")
    }
  }
}

/**
 * Makes a connection whose resources go to `scope`, with the socket's
 * services (given, not read from the context: providing them costs every
 * connection a context of its own).
 *
 * @internal
 */
export const make = (
  params: Params,
  scope: Scope.Scope,
  services: {
    readonly handler: ChannelHandler["Type"]
    readonly broker: Broker["Type"]
    readonly broadcaster: ChannelBroadcaster["Type"]
    readonly telemetry: Telemetry.Telemetry
  }
): Effect.Effect<Connection> =>
  Effect.gen(function*() {
    const connection = new ConnectionImpl(
      params,
      services.handler,
      services.broker,
      services.broadcaster,
      services.telemetry,
      scope,
      yield* Effect.clock
    )
    yield* connection.addFinalizer
    yield* connection.broadcaster.register(connection)
    if (params.id !== undefined) {
      connection.socketSubscriber = new SocketIdSubscriber(connection, params.id)
      yield* connection.broker.subscribe(params.id, connection.socketSubscriber)
    }
    return connection
  })
