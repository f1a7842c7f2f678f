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
 *
 * @internal
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
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import type { Subscriber } from "../Broker.js"
import { Broker, Envelope } from "../Broker.js"
import type { Registration } from "../ChannelBroadcaster.js"
import { ChannelBroadcaster, disconnectEvent } from "../ChannelBroadcaster.js"
import type { ChannelConn, ConnectInfo, JoinResult, LeaveReason, SocketInfo } from "../ChannelConn.js"
import type { ChannelEvent } from "../ChannelEvent.js"
import { InvalidPayload } from "../ChannelEvent.js"
import type { Channel, Incoming } from "../ChannelHandler.js"
import { ChannelHandler } from "../ChannelHandler.js"
import { broadcastRefusal, overLimit, refusal } from "../internal/frameSize.js"
import type { Frame, Message, MessageTooLarge, Outbound, Payload, ReplyStatus } from "../protocol/Message.js"
import * as Msg from "../protocol/Message.js"
import type { MalformedMessage, Serializer } from "../protocol/Serializer.js"
import * as Telemetry from "../internal/metrics.js"
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
let counter = 0

type Decoded = Either.Either<Message, MalformedMessage>

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
 * A joined (or joining) channel: the handle its hooks receive, its state, and
 * its subscription to the topic at once.
 */
class ChannelImpl implements ChannelConn, Subscriber {
  /** Events to handle, from `head` on: an array, not a queue with O(n) shift; made on the first event. */
  mailbox: Array<ChannelEvent | undefined> | undefined = undefined
  head = 0
  /** Pushes and broadcasts made during `join`, sent after its reply. */
  held: Array<Effect.Effect<void>> | undefined = undefined
  /** Broadcasts received before the join reply is out. */
  early: Array<Envelope> | undefined = undefined
  ownAssigns: Record<string, unknown> | undefined = undefined
  ownScope: Scope.CloseableScope | undefined = undefined
  /** The channel's work is over: a scope asked for now is made closed. */
  released = false
  /** The fiber handling the mailbox, while it runs or lingers. */
  fiber: Fiber.RuntimeFiber<void> | undefined = undefined
  /** Resumes the channel's fiber while it lingers for the next event. */
  parked: ((resume: Effect.Effect<boolean>) => void) | undefined = undefined
  /** When the fiber last parked, in `Date.now()` milliseconds. */
  parkedAt = 0
  /** The timer that gives the fiber back once it has lingered idle; one per linger, not per event. */
  lingerTimer: ReturnType<typeof setTimeout> | undefined = undefined
  ended: LeaveReason | undefined = undefined
  /** The join was allowed: `leave` runs when the channel ends. */
  allowed = false
  /** The join reply is out: pushes and broadcasts go straight to the client. */
  joined = false
  running = false
  /** Set when the channel's own fiber ends it: it takes no further event. */
  stopping = false

  constructor(
    readonly connection: ConnectionImpl,
    readonly topic: string,
    readonly joinRef: string,
    readonly hooks: Channel,
    /** The topic pattern its hooks serve, the label of its metrics. */
    readonly pattern: string
  ) {}

  get socket(): SocketInfo {
    return this.connection.socket
  }
  get scope(): Scope.Scope {
    // Made on first use: most channels never ask. Closed when the channel
    // ends; made closed when asked for after, so that what is added to it
    // runs at once, as with any closed scope.
    if (this.ownScope === undefined) {
      const scope = Effect.runSync(Scope.make())
      if (this.released) Effect.runSync(Scope.close(scope, Exit.void))
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
    return event.ref === null || this.ended !== undefined
      ? Effect.void
      : this.connection.sendLimited(Msg.reply(this.joinRef, event.ref, this.topic, status, response), event.event)
  }
  push(event: string, payload: Payload = {}) {
    return Effect.suspend(() =>
      this.ended !== undefined ? Effect.void : this.connection.sendLimited(Msg.push(this.joinRef, this.topic, event, payload), event, this)
    )
  }
  broadcast(event: string, payload: Payload = {}) {
    return this.publish(new Envelope(Msg.broadcast(this.topic, event, payload)))
  }
  broadcastFrom(event: string, payload: Payload = {}) {
    return this.publish(new Envelope(Msg.broadcast(this.topic, event, payload), this.connection.id))
  }
  /** Publishes a broadcast of the channel, refused at the call when it is too large. */
  publish(envelope: Envelope): Effect.Effect<void, MessageTooLarge> {
    return Effect.suspend(() => {
      if (this.ended !== undefined) return Effect.void
      const refused = broadcastRefusal(envelope, this.connection.options.maxOutboundSize)
      return refused === undefined ? this.whenJoined(this.connection.broker.publish(envelope)) : Effect.fail(refused)
    })
  }
  get leave() {
    return Effect.suspend(() =>
      this.joined && this.ended === undefined ? this.connection.terminateFromWithin(this, "closed") : Effect.void
    )
  }
  get assigns() {
    return Effect.sync((): Readonly<Record<string, unknown>> => this.ownAssigns ?? emptyAssigns)
  }
  assign(key: string, value: unknown) {
    return Effect.sync(() => {
      ;(this.ownAssigns ??= {})[key] = value
    })
  }

  /** Runs `effect` now if the join reply is out, after it if `join` is running, never once ended. */
  whenJoined(effect: Effect.Effect<void>): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.ended !== undefined) return Effect.void
      if (this.joined) return effect
      ;(this.held ??= []).push(effect)
      return Effect.void
    })
  }

  /** Writes the topic's broadcasts; until the join reply is out, holds them back. */
  deliver(envelopes: ReadonlyArray<Envelope>): void {
    if (this.ended !== undefined) return
    if (!this.joined) {
      const early = this.early ??= []
      for (const envelope of envelopes) early.push(envelope)
      return
    }
    this.connection.writeBroadcasts(envelopes)
  }

  /** Annotates the logs of the channel's own fiber, for good: the fiber is the channel's. */
  get annotate(): Effect.Effect<void> {
    return FiberRef.update(
      FiberRef.currentLogAnnotations,
      (annotations) => HashMap.set(HashMap.set(annotations, "socket_id", this.connection.logId), "topic", this.topic)
    )
  }
}

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

class ConnectionImpl implements Connection, Registration {
  readonly id = `${node}.${++counter}`
  readonly socket: SocketInfoImpl
  readonly transport: Transport
  readonly serializer: Serializer
  readonly options: Options
  readonly heartbeatMillis: number
  readonly channels = new Map<string, ChannelImpl>()
  /** Frames received and not handled yet; made when a frame has to wait. */
  inbox: Array<Decoded> | undefined = undefined
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
    if (this.closed) return false
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
   * there when over `maxOutboundSize`; a push of a channel whose join is
   * running is written after the join reply.
   */
  sendLimited(message: Outbound, event: string, heldBy?: ChannelImpl): Effect.Effect<void, MessageTooLarge> {
    return Effect.suspend(() => {
      const frame = this.serializer.encode(message)
      if (Either.isLeft(frame)) return Effect.logWarning("message dropped", frame.left.reason)
      const refused = refusal(frame.right, message.topic, event, this.options.maxOutboundSize)
      if (refused !== undefined) return Effect.fail(refused)
      const write = Effect.sync(() => this.write(frame.right))
      return heldBy === undefined ? write : heldBy.whenJoined(write)
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

  // Channels

  /**
   * Ends a channel's work, uninterruptibly, so that `leave` runs once:
   * interrupts its fiber, unsubscribes, runs `leave` for an allowed join and
   * closes its scope.
   */
  release(channel: ChannelImpl): Effect.Effect<void> {
    return Effect.uninterruptible(Effect.suspend(() => {
      const steps: Array<Effect.Effect<void>> = []
      const fiber = channel.fiber
      channel.fiber = undefined
      channel.parked = undefined
      stopLinger(channel)
      if (fiber !== undefined) steps.push(Effect.asVoid(Fiber.interrupt(fiber)))
      steps.push(this.broker.unsubscribe(channel.topic, channel))
      if (channel.allowed) {
        this.telemetry.recorder.channelLeft(channel.pattern)
        steps.push(
          Effect.suspend(() => channel.hooks.leave(channel, channel.ended ?? "disconnected")).pipe(
            Effect.catchAllCause((cause) => Effect.logError("leave failed", cause)),
            Effect.annotateLogs("topic", channel.topic)
          )
        )
      }
      steps.push(Effect.suspend(() => {
        channel.released = true
        return channel.ownScope === undefined ? Effect.void : Scope.close(channel.ownScope, Exit.void)
      }))
      return Effect.all(steps, { discard: true })
    }))
  }

  /** Ends a channel and tells its client: `phx_close`, or `phx_error` for a crash. */
  terminate(channel: ChannelImpl, reason: LeaveReason): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (channel.ended !== undefined) return Effect.void
      channel.ended = reason
      if (this.channels.get(channel.topic) === channel) this.channels.delete(channel.topic)
      const notice = reason === "crashed"
        ? Msg.push(channel.joinRef, channel.topic, Msg.Events.error, { reason: "channel_crash" }, channel.joinRef)
        : Msg.push(channel.joinRef, channel.topic, Msg.Events.close, {}, channel.joinRef)
      return Effect.zipRight(this.release(channel), this.send(notice))
    })
  }

  /** Terminates a channel from one of its own fibers, which the termination interrupts. */
  terminateFromWithin(channel: ChannelImpl, reason: LeaveReason): Effect.Effect<void> {
    return Effect.suspend(() => {
      // The channel takes no further event from now on, though it ends in another fiber.
      channel.stopping = true
      return Effect.asVoid(Effect.forkIn(this.terminate(channel, reason), this.scope))
    })
  }

  handleIncoming(channel: ChannelImpl, incoming: Incoming, event: ChannelEvent): Effect.Effect<void> {
    const handled = this.telemetry.tracing
      ? Telemetry.eventSpan(incoming(channel, event), channel.topic, event.event)
      : incoming(channel, event)
    return Effect.catchAllCause(handled, (cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
      const failure = Option.getOrUndefined(Cause.failureOption(cause))
      if (isInvalidPayload(failure)) {
        // The error's message may quote the payload: too large, the reply says less.
        return Effect.catchAll(channel.reply(event, "error", failure.response), () =>
          this.send(Msg.reply(channel.joinRef, event.ref, channel.topic, "error", { reason: "invalid payload" })))
      }
      return Effect.zipRight(Effect.logError("channel crashed", cause), this.terminateFromWithin(channel, "crashed"))
    })
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

  /** Handles a channel's events in order, in the channel's fiber, which ends once it has lingered idle. */
  runMailbox(channel: ChannelImpl): Effect.Effect<void> {
    const connection = this
    return Effect.zipRight(
      channel.annotate,
      channel.hooks.handleEvents((incoming) =>
        Effect.gen(function*() {
          while (channel.ended === undefined && !channel.stopping) {
            const mailbox = channel.mailbox!
            if (channel.head === mailbox.length) {
              mailbox.length = channel.head = 0
              // Events that came while the linger ended are in the mailbox: the
              // check and the release are one step.
              if (!(yield* connection.awaitEvent(channel)) && mailbox.length === 0) break
              continue
            }
            const event = mailbox[channel.head]!
            mailbox[channel.head++] = undefined
            yield* connection.handleIncoming(channel, incoming, event)
          }
          // Given back: an idle channel keeps neither its fiber, nor its mailbox, nor a timer.
          stopLinger(channel)
          channel.running = false
          channel.fiber = undefined
          if (channel.mailbox!.length === channel.head) {
            channel.mailbox = undefined
            channel.head = 0
          }
        })
      )
    )
  }

  enqueue(channel: ChannelImpl, event: ChannelEvent): Effect.Effect<void> {
    if (channel.stopping) return Effect.void
    const mailbox = channel.mailbox ??= []
    if (mailbox.length - channel.head >= this.options.inboundQueueLimit) {
      return Effect.sync(() => this.close(CloseCode.policyViolation, "too many messages queued"))
    }
    mailbox.push(event)
    if (channel.parked !== undefined) {
      wakeUp(channel)
      return Effect.void
    }
    if (channel.running) return Effect.void
    channel.running = true
    return Effect.map(Effect.forkIn(this.runMailbox(channel), this.scope), (fiber) => {
      // A fiber that has already ended is not kept.
      if (channel.running && channel.ended === undefined) channel.fiber = fiber
    })
  }

  /** Counts a join's result, and notes it on the join's span. */
  joinResult(result: Telemetry.JoinResult, pattern: string): Effect.Effect<void> {
    this.telemetry.recorder.join(result, pattern)
    return this.telemetry.tracing ? Telemetry.annotateJoin(result, pattern) : Effect.void
  }

  join(message: Message): Effect.Effect<void> {
    const connection = this
    const { topic } = message
    return Effect.gen(function*() {
      const existing = connection.channels.get(topic)
      if (existing !== undefined) {
        yield* Effect.logDebug("duplicate join: closing the existing channel")
        yield* connection.terminate(existing, "duplicate")
      }
      const hooks = connection.handler.channel(topic)
      if (hooks === undefined) {
        yield* Effect.logDebug("join to an unmatched topic")
        yield* connection.joinResult("refused", Telemetry.unmatched)
        return yield* connection.sendError(message, message.joinRef, { reason: "unmatched topic" })
      }
      const pattern = hooks.pattern ?? Telemetry.anyTopic
      if (connection.channels.size >= connection.options.maxChannels) {
        yield* connection.joinResult("refused", pattern)
        return yield* connection.sendError(message, message.joinRef, { reason: "too many channels joined" })
      }
      const channel = new ChannelImpl(connection, topic, message.joinRef ?? message.ref ?? "", hooks, pattern)
      // Subscribed before `join` runs, so that every broadcast published after
      // the hook read something (a presence state) reaches the client, after
      // the pushes made during `join`.
      yield* connection.broker.subscribe(topic, channel)
      const exit = yield* Effect.exit(hooks.join(channel, toEvent(message)))
      if (Exit.isFailure(exit) || exit.value._tag === "Refuse") {
        channel.ended = "left"
        yield* connection.release(channel)
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
      connection.channels.set(topic, channel)
      channel.allowed = true
      connection.telemetry.recorder.channelJoined(pattern)
      yield* connection.joinResult("allowed", pattern)
      yield* connection.send(Msg.reply(message.joinRef, message.ref, topic, "ok", exit.value.response))
      while (channel.held !== undefined) {
        const held = channel.held
        channel.held = undefined
        yield* Effect.all(held, { discard: true })
      }
      channel.joined = true
      const early = channel.early
      channel.early = undefined
      if (early !== undefined) channel.deliver(early)
    }).pipe(Effect.annotateLogs({ socket_id: this.logId, topic }))
  }

  // Frames

  handleFrame(decoded: Decoded): Effect.Effect<void> {
    if (Either.isLeft(decoded)) {
      return Effect.zipRight(
        Effect.annotateLogs(Effect.logWarning("closing on a malformed frame"), "reason", decoded.left.reason),
        Effect.sync(() => this.close(CloseCode.invalidPayload, decoded.left.reason))
      ).pipe(Effect.annotateLogs("socket_id", this.logId))
    }
    const message = decoded.right
    if (message.event === Msg.Events.heartbeat && message.topic === Msg.socketTopic) {
      return this.send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
    }
    if (message.event === Msg.Events.join) {
      return this.telemetry.tracing ? Telemetry.joinSpan(this.join(message), message.topic) : this.join(message)
    }
    const channel = this.channels.get(message.topic)
    if (channel === undefined) {
      return message.event === Msg.Events.leave
        ? this.send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
        : this.sendError(message, null, { reason: "unmatched topic" })
    }
    if (message.joinRef !== null && message.joinRef !== channel.joinRef) return Effect.void
    if (message.event === Msg.Events.leave) {
      return Effect.zipRight(
        this.send(Msg.reply(channel.joinRef, message.ref, channel.topic, "ok", {})),
        this.terminate(channel, "left")
      )
    }
    return this.enqueue(channel, toEvent(message))
  }

  handleEach(frames: Array<Decoded>, index: number): Effect.Effect<void> {
    return index === frames.length || this.closed
      ? Effect.void
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
        return Effect.zipRight(this.handleEach(inbox, 0), this.run)
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
   * The frames a running channel takes, handled as they arrive, without
   * waking the connection's fiber: pushes to a channel whose fiber is
   * running or lingering, heartbeats, and stale messages. Anything else
   * (joins, leaves, errors, a channel that needs a fiber) goes through the
   * connection's fiber, and so does everything while it has frames queued,
   * which keeps the order of every message.
   */
  handleAtOnce(decoded: Decoded): boolean {
    if (Either.isLeft(decoded)) return false
    const message = decoded.right
    if (message.event === Msg.Events.heartbeat && message.topic === Msg.socketTopic) {
      this.lastReceived = this.clock.unsafeCurrentTimeMillis()
      const frame = this.serializer.encode(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
      if (Either.isRight(frame)) this.write(frame.right)
      return true
    }
    const channel = this.channels.get(message.topic)
    if (channel === undefined || !channel.running || channel.stopping || message.event === Msg.Events.leave) {
      return false
    }
    if (message.event === Msg.Events.join) return false
    const mailbox = channel.mailbox!
    if (mailbox.length - channel.head >= this.options.inboundQueueLimit) return false
    this.lastReceived = this.clock.unsafeCurrentTimeMillis()
    if (message.joinRef !== null && message.joinRef !== channel.joinRef) return true
    mailbox.push(toEvent(message))
    if (channel.parked !== undefined) wakeUp(channel)
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
      const channels = Array.from(this.channels.values()).reverse()
      this.channels.clear()
      for (const channel of channels) channel.ended ??= "disconnected"
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
        Effect.zipRight(Effect.sync(() => this.telemetry.recorder.connectionClosed(this.socket.connectInfo.transport))),
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
