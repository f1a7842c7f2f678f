/**
 * The connection runtime: one client connection, whatever its transport.
 *
 * The connection lives in the caller's `Scope` and fiber (the transport's):
 * `run` handles the frames received, in order, until the transport closes;
 * frames for a channel whose fiber is running are handed to it as they
 * arrive, when nothing is queued before them. Each joined channel gets a
 * child scope; the events its client pushes are handled in order by a fiber
 * of the channel, which runs while the channel has work and lingers a second
 * for more (an idle channel costs no fiber). The topic's broadcasts are
 * written directly by the broker's fiber for the topic, through a subscriber
 * callback. Silence is detected by the broadcaster's registry, which sweeps
 * every connection's last activity (a connection costs no timer of its own).
 * Closing a channel's scope runs its `leave` hook; closing the connection's
 * scope closes every channel, then runs `disconnect`, whatever ended the
 * connection.
 *
 * @internal
 */
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { Broker, Envelope } from "../Broker.js"
import { ChannelBroadcaster, disconnectEvent } from "../ChannelBroadcaster.js"
import type { ChannelConn, ConnectInfo, JoinResult, LeaveReason, SocketInfo } from "../ChannelConn.js"
import type { ChannelEvent } from "../ChannelEvent.js"
import { InvalidPayload } from "../ChannelEvent.js"
import type { Channel, Incoming } from "../ChannelHandler.js"
import { ChannelHandler } from "../ChannelHandler.js"
import type { Frame, Message, Outbound, Payload, ReplyStatus } from "../protocol/Message.js"
import * as Msg from "../protocol/Message.js"
import type { MalformedMessage, Serializer } from "../protocol/Serializer.js"
import type { Transport } from "../transport/Transport.js"
import { CloseCode } from "../transport/Transport.js"

/** @internal */
export interface Options {
  readonly heartbeatTimeout: Duration.Duration
  readonly maxChannels: number
  readonly maxFrameSize: number
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

/** @internal */
export interface Connection {
  /** A unique id of this connection (not the socket id, which several connections may share). */
  readonly id: string
  readonly socket: SocketInfo
  /** Hands a frame received from the client to the connection, in order. */
  readonly receive: (frame: Frame) => void
  /** Tells the connection that its transport has closed. */
  readonly transportClosed: () => void
  /** Handles received frames until the transport has closed. */
  readonly run: Effect.Effect<void>
}

interface ChannelState {
  readonly topic: string
  readonly joinRef: string
  readonly hooks: Channel
  readonly scope: Scope.CloseableScope
  /** Events to handle, from `head` on: an array, not a queue with O(n) shift. */
  readonly mailbox: Array<ChannelEvent>
  head: number
  /** Annotates the logs of the channel's fiber with its topic (the fiber is the channel's: no need to restore). */
  readonly annotate: Effect.Effect<void>
  readonly assigns: Record<string, unknown>
  readonly held: Array<Effect.Effect<void>>
  readonly early: Array<Envelope>
  conn: ChannelConn
  joined: boolean
  running: boolean
  /** Set when the channel's own fiber ends it: it takes no further event. */
  stopping: boolean
  /** Wakes the channel's fiber while it lingers for the next event. */
  wake: (() => void) | undefined
  ended: LeaveReason | undefined
}

/** What the handles of a connection's channels share. */
interface ConnOps {
  readonly socket: SocketInfo
  readonly connectionId: string
  readonly send: (message: Outbound) => Effect.Effect<void>
  readonly whenJoined: (channel: ChannelState, effect: Effect.Effect<void>) => Effect.Effect<void>
  readonly terminateFromWithin: (channel: ChannelState, reason: LeaveReason) => Effect.Effect<void>
  readonly publish: (envelope: Envelope) => Effect.Effect<void>
}

/** A channel's handle: methods on the prototype, so that a channel costs two objects, not a dozen closures. */
class ChannelConnImpl implements ChannelConn {
  constructor(private readonly channel: ChannelState, private readonly ops: ConnOps) {}
  get topic() {
    return this.channel.topic
  }
  get joinRef() {
    return this.channel.joinRef
  }
  get socket() {
    return this.ops.socket
  }
  get scope(): Scope.Scope {
    return this.channel.scope
  }
  allowJoin(response: Payload = {}): JoinResult {
    return { _tag: "Allow", response }
  }
  refuseJoin(reason: Payload): JoinResult {
    return { _tag: "Refuse", reason }
  }
  reply(event: ChannelEvent, status: ReplyStatus, response: Payload = {}) {
    const { channel } = this
    return event.ref === null || channel.ended !== undefined
      ? Effect.void
      : this.ops.send(Msg.reply(channel.joinRef, event.ref, channel.topic, status, response))
  }
  push(event: string, payload: Payload = {}) {
    const { channel } = this
    return this.ops.whenJoined(channel, this.ops.send(Msg.push(channel.joinRef, channel.topic, event, payload)))
  }
  broadcast(event: string, payload: Payload = {}) {
    return this.ops.whenJoined(
      this.channel,
      this.ops.publish(new Envelope(Msg.broadcast(this.channel.topic, event, payload)))
    )
  }
  broadcastFrom(event: string, payload: Payload = {}) {
    return this.ops.whenJoined(
      this.channel,
      this.ops.publish(new Envelope(Msg.broadcast(this.channel.topic, event, payload), this.ops.connectionId))
    )
  }
  get leave() {
    const { channel } = this
    return Effect.suspend(() =>
      channel.joined && channel.ended === undefined ? this.ops.terminateFromWithin(channel, "closed") : Effect.void
    )
  }
  get assigns() {
    return Effect.sync(() => this.channel.assigns)
  }
  assign(key: string, value: unknown) {
    return Effect.sync(() => {
      this.channel.assigns[key] = value
    })
  }
}

const node = Math.random().toString(36).slice(2, 10)
const lingerMillis = 1000
let counter = 0

type Decoded = Either.Either<Message, MalformedMessage>

const frameSize = (frame: Frame) => (typeof frame === "string" ? frame.length : frame.byteLength)

/**
 * Whether a received frame is over the limit, which counts bytes: for a text
 * frame, its UTF-8 length. A UTF-16 unit takes 1 to 3 bytes, so the UTF-8
 * length is counted only when the string's length cannot decide.
 */
const overLimit = (frame: Frame, limit: number): boolean => {
  if (typeof frame !== "string") return frame.byteLength > limit
  if (frame.length > limit) return true
  if (frame.length * 3 <= limit) return false
  let bytes = frame.length
  for (let i = 0; i < frame.length; i++) {
    const unit = frame.charCodeAt(i)
    // Units past U+007F take 2 bytes, past U+07FF 3; a surrogate pair takes 4 for its 2 units.
    if (unit >= 0x80) bytes += unit < 0x800 || (unit >= 0xd800 && unit <= 0xdfff) ? 1 : 2
  }
  return bytes > limit
}

const toEvent = (message: Message): ChannelEvent => ({
  topic: message.topic,
  event: message.event,
  payload: message.payload,
  ref: message.ref,
  joinRef: message.joinRef
})

const isInvalidPayload = (u: unknown): u is InvalidPayload => u instanceof InvalidPayload

/** @internal */
export const make = (
  params: Params
): Effect.Effect<Connection, never, Scope.Scope | ChannelHandler | Broker | ChannelBroadcaster> =>
  Effect.gen(function*() {
    const handler = yield* ChannelHandler
    const broker = yield* Broker
    const broadcaster = yield* ChannelBroadcaster
    const scope = yield* Effect.scope
    const { options, serializer, transport } = params
    const id = `${node}.${++counter}`
    // The connection owns its fiber: annotate it for good, with no frame to unwind.
    yield* FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set<string, unknown>("socket_id", params.id ?? null))
    const channels = new Map<string, ChannelState>()
    const inbox: Array<Decoded> = []
    let transportOpen = true
    let wake: (() => void) | undefined
    const heartbeatMillis = Duration.toMillis(options.heartbeatTimeout)
    const clock = yield* Effect.clock
    let lastReceived = clock.unsafeCurrentTimeMillis()
    let closed: { readonly code: number; readonly reason: string } | undefined

    const socketAssigns: Record<string, unknown> = { ...params.assigns }
    const socket: SocketInfo = {
      id: Option.fromNullable(params.id),
      connectInfo: params.connectInfo,
      assigns: socketAssigns,
      assign: (key, value) =>
        Effect.sync(() => {
          socketAssigns[key] = value
        })
    }

    const close = (code: number, reason: string) => {
      if (closed !== undefined) return
      closed = { code, reason }
      transport.close(code, reason)
    }

    /** Drops a client that does not read: its close frame would wait behind what it does not read. */
    const dropSlowClient = () => {
      if (closed !== undefined) return
      closed = { code: CloseCode.tryAgainLater, reason: "outbound buffer full" }
      transport.abort()
    }

    /** Whether the client takes what is written: past the bound, it is disconnected. */
    const writable = () => {
      if (closed !== undefined) return false
      if (transport.bufferedAmount() <= options.outboundBufferLimit) return true
      dropSlowClient()
      return false
    }

    const write = (frame: Frame) => {
      if (writable()) transport.send(frame)
    }

    const send = (message: Outbound): Effect.Effect<void> =>
      Effect.suspend(() => {
        const frame = serializer.encode(message)
        if (Either.isLeft(frame)) {
          return Effect.logWarning("message dropped", frame.left.reason)
        }
        write(frame.right)
        return Effect.void
      })

    const sendError = (message: Message, joinRef: string | null, reason: Payload) =>
      send(Msg.reply(joinRef, message.ref, message.topic, "error", reason))

    // Channels

    const terminate = (channel: ChannelState, reason: LeaveReason): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (channel.ended !== undefined) return Effect.void
        channel.ended = reason
        if (channels.get(channel.topic) === channel) channels.delete(channel.topic)
        const notice = reason === "crashed"
          ? Msg.push(channel.joinRef, channel.topic, Msg.Events.error, { reason: "channel_crash" }, channel.joinRef)
          : Msg.push(channel.joinRef, channel.topic, Msg.Events.close, {}, channel.joinRef)
        return Effect.zipRight(Scope.close(channel.scope, Exit.void), send(notice))
      })

    /** Terminates a channel from one of its own fibers, which the termination interrupts. */
    const terminateFromWithin = (channel: ChannelState, reason: LeaveReason) =>
      Effect.suspend(() => {
        // The channel takes no further event from now on, though it ends in another fiber.
        channel.stopping = true
        return Effect.asVoid(Effect.forkIn(terminate(channel, reason), scope))
      })

    const whenJoined = (channel: ChannelState, effect: Effect.Effect<void>): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (channel.ended !== undefined) return Effect.void
        if (channel.joined) return effect
        channel.held.push(effect)
        return Effect.void
      })

    const ops: ConnOps = { socket, send, whenJoined, terminateFromWithin, publish: broker.publish, connectionId: id }
    const makeConn = (channel: ChannelState): ChannelConn => new ChannelConnImpl(channel, ops)

    const crash = (channel: ChannelState, cause: Cause.Cause<unknown>) =>
      Effect.zipRight(
        Effect.logError("channel crashed", cause),
        terminateFromWithin(channel, "crashed")
      )

    const handleIncoming = (channel: ChannelState, incoming: Incoming, event: ChannelEvent): Effect.Effect<void> =>
      incoming(channel.conn, event).pipe(
        Effect.catchIf(isInvalidPayload, (error) => channel.conn.reply(event, "error", error.response)),
        Effect.catchAllCause((cause) => Cause.isInterruptedOnly(cause) ? Effect.interrupt : crash(channel, cause))
      )

    /** Handles a channel's events in order, in a fiber that ends when the mailbox is empty. */
    /**
     * Waits for the next event of an idle channel, for a while: a channel that
     * keeps receiving keeps its fiber; one idle for `lingerMillis` lets it go.
     * Succeeds with whether an event came. (A timer of the machine, not of the
     * `Clock`: it only decides when a fiber is given back, nothing anyone sees.)
     */
    const awaitEvent = (channel: ChannelState) =>
      Effect.async<boolean>((resume) => {
        const timer = setTimeout(() => {
          channel.wake = undefined
          resume(Effect.succeed(false))
        }, lingerMillis)
        channel.wake = () => {
          clearTimeout(timer)
          channel.wake = undefined
          resume(Effect.succeed(true))
        }
        return Effect.sync(() => {
          clearTimeout(timer)
          channel.wake = undefined
        })
      })

    const runMailbox = (channel: ChannelState) =>
      Effect.zipRight(channel.annotate, channel.hooks.handleEvents((incoming) => Effect.gen(function*() {
        const { mailbox } = channel
        while (channel.ended === undefined && !channel.stopping) {
          if (channel.head === mailbox.length) {
            mailbox.length = channel.head = 0
            // Events that came while the linger ended are in the mailbox: the
            // check and the release are one step.
            if (!(yield* awaitEvent(channel)) && mailbox.length === 0) {
              channel.running = false
              return
            }
            continue
          }
          const event = mailbox[channel.head]!
          mailbox[channel.head++] = undefined as unknown as ChannelEvent
          yield* handleIncoming(channel, incoming, event)
        }
      })))

    const enqueue = (channel: ChannelState, event: ChannelEvent): Effect.Effect<void> => {
      if (channel.stopping) return Effect.void
      if (channel.mailbox.length - channel.head >= options.inboundQueueLimit) {
        return Effect.sync(() => close(CloseCode.policyViolation, "too many messages queued"))
      }
      channel.mailbox.push(event)
      if (channel.wake !== undefined) {
        channel.wake()
        return Effect.void
      }
      if (channel.running) return Effect.void
      channel.running = true
      return Effect.asVoid(Effect.forkIn(runMailbox(channel), channel.scope))
    }

    /** Writes broadcasts; until the join reply is out, holds them back. */
    const deliverTo = (channel: ChannelState) => (envelopes: ReadonlyArray<Envelope>) => {
      if (!channel.joined) {
        channel.early.push(...envelopes)
        return
      }
      if (!writable()) return
      if (envelopes.length === 1) {
        const frame = envelopes[0]!.except === id ? undefined : envelopes[0]!.frame(serializer)
        if (frame !== undefined && Either.isRight(frame)) transport.send(frame.right)
        return
      }
      // Within the bound: past it, what fits is written and the client dropped.
      const room = options.outboundBufferLimit - transport.bufferedAmount()
      const frames: Array<Frame> = []
      let size = 0
      for (const envelope of envelopes) {
        if (envelope.except === id) continue
        const frame = envelope.frame(serializer)
        if (Either.isLeft(frame)) continue
        size += frameSize(frame.right)
        if (size > room && frames.length > 0) {
          transport.sendAll(frames)
          return dropSlowClient()
        }
        frames.push(frame.right)
      }
      transport.sendAll(frames)
    }

    const join = (message: Message) =>
      Effect.gen(function*() {
        const { topic } = message
        const existing = channels.get(topic)
        if (existing !== undefined) {
          yield* Effect.logDebug("duplicate join: closing the existing channel")
          yield* terminate(existing, "duplicate")
        }
        const hooks = handler.channel(topic)
        if (hooks === undefined) {
          yield* Effect.logDebug("join to an unmatched topic")
          return yield* sendError(message, message.joinRef, { reason: "unmatched topic" })
        }
        if (channels.size >= options.maxChannels) {
          return yield* sendError(message, message.joinRef, { reason: "too many channels joined" })
        }
        const channelScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
        const channel: ChannelState = {
          topic,
          joinRef: message.joinRef ?? message.ref ?? "",
          hooks,
          scope: channelScope,
          mailbox: [],
          head: 0,
          annotate: FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set<string, unknown>("topic", topic)),
          assigns: {},
          held: [],
          early: [],
          conn: undefined as unknown as ChannelConn,
          joined: false,
          running: false,
          stopping: false,
          wake: undefined,
          ended: undefined
        }
        channel.conn = makeConn(channel)
        // Subscribed before `join` runs, so that every broadcast published after
        // the hook read something (a presence state) reaches the client, after
        // the pushes made during `join`. Unsubscribed first when the channel ends.
        const deliver = deliverTo(channel)
        const subscription = yield* Scope.fork(channelScope, ExecutionStrategy.sequential)
        yield* Scope.extend(broker.subscribe(topic, deliver), subscription)
        const exit = yield* Effect.exit(hooks.join(channel.conn, toEvent(message)))
        if (Exit.isFailure(exit) || exit.value._tag === "Refuse") {
          channel.ended = "left"
          yield* Scope.close(channelScope, Exit.void)
          if (Exit.isSuccess(exit)) {
            return yield* sendError(message, message.joinRef, exit.value._tag === "Refuse" ? exit.value.reason : {})
          }
          const failure = Cause.failureOption(exit.cause)
          if (Option.isSome(failure) && isInvalidPayload(failure.value)) {
            return yield* sendError(message, message.joinRef, failure.value.response)
          }
          yield* Effect.logError("join crashed", exit.cause)
          return yield* sendError(message, message.joinRef, { reason: "join crashed" })
        }
        const { response } = exit.value
        channels.set(topic, channel)
        yield* Scope.addFinalizer(
          channelScope,
          Effect.suspend(() => hooks.leave(channel.conn, channel.ended ?? "disconnected")).pipe(
            Effect.catchAllCause((cause) => Effect.logError("leave failed", cause))
          )
        )
        yield* Scope.addFinalizer(channelScope, Scope.close(subscription, Exit.void))
        yield* send(Msg.reply(message.joinRef, message.ref, topic, "ok", response))
        while (channel.held.length > 0) yield* Effect.all(channel.held.splice(0), { discard: true })
        channel.joined = true
        if (channel.early.length > 0) deliver(channel.early.splice(0))
      }).pipe(Effect.annotateLogs("topic", message.topic))

    // Frames

    const handleFrame = (decoded: Decoded): Effect.Effect<void> => {
      if (Either.isLeft(decoded)) {
        return Effect.zipRight(
          Effect.logWarning("closing on a malformed frame", decoded.left.reason),
          Effect.sync(() => close(CloseCode.invalidPayload, decoded.left.reason))
        )
      }
      const message = decoded.right
      if (message.event === Msg.Events.heartbeat && message.topic === Msg.socketTopic) {
        return send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
      }
      if (message.event === Msg.Events.join) return join(message)
      const channel = channels.get(message.topic)
      if (channel === undefined) {
        return message.event === Msg.Events.leave
          ? send(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
          : sendError(message, null, { reason: "unmatched topic" })
      }
      if (message.joinRef !== null && message.joinRef !== channel.joinRef) return Effect.void
      if (message.event === Msg.Events.leave) {
        return Effect.zipRight(
          send(Msg.reply(channel.joinRef, message.ref, channel.topic, "ok", {})),
          terminate(channel, "left")
        )
      }
      return enqueue(channel, toEvent(message))
    }

    const awaitFrames = Effect.async<void>((resume) => {
      wake = () => {
        wake = undefined
        resume(Effect.void)
      }
      return Effect.sync(() => {
        wake = undefined
      })
    })

    const handleEach = (frames: Array<Decoded>, index: number): Effect.Effect<void> =>
      index === frames.length || closed !== undefined
        ? Effect.void
        : Effect.flatMap(handleFrame(frames[index]!), () => handleEach(frames, index + 1))

    const handleFrames = (frames: Array<Decoded>) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        lastReceived = now
        return handleEach(frames, 0)
      })

    // A loop of effects, not a generator: nothing stays suspended between frames.
    const run: Effect.Effect<void> = Effect.suspend(() => {
      if (inbox.length > 0) return Effect.zipRight(handleFrames(inbox.splice(0)), run)
      return transportOpen ? Effect.zipRight(awaitFrames, run) : Effect.void
    })

    // Life cycle: finalizers run in reverse, so channels close (running
    // `leave`), then the transport is closed, then `disconnect` runs.

    yield* broadcaster.register({
      lastActivity: () => lastReceived,
      heartbeatMillis,
      expire: () => close(CloseCode.normal, "heartbeat timeout")
    })
    yield* Effect.addFinalizer(() =>
      Effect.zipRight(
        Effect.sync(() => close(CloseCode.goingAway, "server shutting down")),
        handler.disconnect(socket).pipe(
          Effect.catchAllCause((cause) => Effect.logError("disconnect failed", cause))
        )
      )
    )
    if (params.id !== undefined) {
      yield* broker.subscribe(params.id, (envelopes) => {
        if (envelopes.some((envelope) => envelope.message.event === disconnectEvent)) {
          close(CloseCode.goingAway, "disconnected by the server")
        }
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
    const handleAtOnce = (decoded: Decoded): boolean => {
      if (Either.isLeft(decoded)) return false
      const message = decoded.right
      if (message.event === Msg.Events.heartbeat && message.topic === Msg.socketTopic) {
        lastReceived = clock.unsafeCurrentTimeMillis()
        const frame = serializer.encode(Msg.reply(message.joinRef, message.ref, message.topic, "ok", {}))
        if (Either.isRight(frame)) write(frame.right)
        return true
      }
      const channel = channels.get(message.topic)
      if (channel === undefined || !channel.running || channel.stopping || message.event === Msg.Events.leave) {
        return false
      }
      if (message.event === Msg.Events.join) return false
      if (channel.mailbox.length - channel.head >= options.inboundQueueLimit) return false
      lastReceived = clock.unsafeCurrentTimeMillis()
      if (message.joinRef !== null && message.joinRef !== channel.joinRef) return true
      channel.mailbox.push(toEvent(message))
      channel.wake?.()
      return true
    }

    const receive = (frame: Frame): void => {
      if (closed !== undefined) return
      if (overLimit(frame, options.maxFrameSize)) {
        return close(CloseCode.messageTooBig, "frame too large")
      }
      const decoded = serializer.decode(frame)
      if (inbox.length === 0 && wake !== undefined && handleAtOnce(decoded)) return
      if (inbox.length >= options.inboundQueueLimit) {
        return close(CloseCode.policyViolation, "too many messages queued")
      }
      inbox.push(decoded)
      wake?.()
    }
    const transportClosed = () => {
      transportOpen = false
      wake?.()
    }
    return { id, socket, receive, transportClosed, run }
  })
