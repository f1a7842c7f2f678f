/**
 * The connection runtime: one client connection, whatever its transport.
 *
 * The connection lives in the caller's `Scope` and fiber (the transport's):
 * `run` handles the frames received, in order, until the transport closes.
 * Each joined channel gets a child scope; the events its client pushes are
 * handled in order by a fiber of the channel, which runs while the channel
 * has work (an idle channel costs no fiber). The topic's broadcasts are
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
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { Broker, Envelope } from "../Broker.js"
import { ChannelBroadcaster, disconnectEvent } from "../ChannelBroadcaster.js"
import type { ChannelConn, ConnectInfo, LeaveReason, SocketInfo } from "../ChannelConn.js"
import type { ChannelEvent } from "../ChannelEvent.js"
import { InvalidPayload } from "../ChannelEvent.js"
import type { Channel } from "../ChannelHandler.js"
import { ChannelHandler } from "../ChannelHandler.js"
import type { Frame, Message, Outbound, Payload } from "../protocol/Message.js"
import * as Msg from "../protocol/Message.js"
import type { Serializer } from "../protocol/Serializer.js"
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
  readonly mailbox: Array<ChannelEvent>
  readonly assigns: Record<string, unknown>
  readonly held: Array<Effect.Effect<void>>
  readonly early: Array<Envelope>
  conn: ChannelConn
  joined: boolean
  running: boolean
  ended: LeaveReason | undefined
}

const node = Math.random().toString(36).slice(2, 10)
let counter = 0

const frameSize = (frame: Frame) => (typeof frame === "string" ? frame.length : frame.byteLength)

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
    const channels = new Map<string, ChannelState>()
    const inbox: Array<Frame> = []
    let transportOpen = true
    let wake: (() => void) | undefined
    const heartbeatMillis = Duration.toMillis(options.heartbeatTimeout)
    let lastReceived = yield* Clock.currentTimeMillis
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

    /** Whether the client takes what is written: past the bound, it is disconnected. */
    const writable = () => {
      if (closed !== undefined) return false
      if (transport.bufferedAmount() <= options.outboundBufferLimit) return true
      close(CloseCode.tryAgainLater, "outbound buffer full: the client does not read")
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
      Effect.asVoid(Effect.forkIn(terminate(channel, reason), scope))

    const whenJoined = (channel: ChannelState, effect: Effect.Effect<void>): Effect.Effect<void> =>
      Effect.suspend(() => {
        if (channel.ended !== undefined) return Effect.void
        if (channel.joined) return effect
        channel.held.push(effect)
        return Effect.void
      })

    const makeConn = (channel: ChannelState): ChannelConn => ({
      topic: channel.topic,
      joinRef: channel.joinRef,
      socket,
      scope: channel.scope,
      allowJoin: (response = {}) => ({ _tag: "Allow", response }),
      refuseJoin: (reason) => ({ _tag: "Refuse", reason }),
      reply: (event, status, response = {}) =>
        event.ref === null || channel.ended !== undefined
          ? Effect.void
          : send(Msg.reply(channel.joinRef, event.ref, channel.topic, status, response)),
      push: (event, payload = {}) => whenJoined(channel, send(Msg.push(channel.joinRef, channel.topic, event, payload))),
      broadcast: (event, payload = {}) =>
        whenJoined(channel, broker.publish(new Envelope(Msg.broadcast(channel.topic, event, payload)))),
      broadcastFrom: (event, payload = {}) =>
        whenJoined(channel, broker.publish(new Envelope(Msg.broadcast(channel.topic, event, payload), id))),
      leave: Effect.suspend(() =>
        channel.joined && channel.ended === undefined ? terminateFromWithin(channel, "closed") : Effect.void
      ),
      assigns: Effect.sync(() => channel.assigns),
      assign: (key, value) =>
        Effect.sync(() => {
          channel.assigns[key] = value
        })
    })

    const crash = (channel: ChannelState, cause: Cause.Cause<unknown>) =>
      Effect.zipRight(
        Effect.logError("channel crashed", cause),
        terminateFromWithin(channel, "crashed")
      )

    const handleIncoming = (channel: ChannelState, event: ChannelEvent): Effect.Effect<void> =>
      channel.hooks.incoming(channel.conn, event).pipe(
        Effect.catchIf(isInvalidPayload, (error) => channel.conn.reply(event, "error", error.response)),
        Effect.catchAllCause((cause) => Cause.isInterruptedOnly(cause) ? Effect.interrupt : crash(channel, cause))
      )

    /** Handles a channel's events in order, in a fiber that ends when the mailbox is empty. */
    const runMailbox = (channel: ChannelState) =>
      Effect.gen(function*() {
        while (channel.ended === undefined) {
          const event = channel.mailbox.shift()
          if (event === undefined) {
            channel.running = false
            return
          }
          yield* handleIncoming(channel, event)
        }
      }).pipe(Effect.annotateLogs("topic", channel.topic))

    const enqueue = (channel: ChannelState, event: ChannelEvent): Effect.Effect<void> => {
      if (channel.mailbox.length >= options.inboundQueueLimit) {
        return Effect.sync(() => close(CloseCode.policyViolation, "too many messages queued"))
      }
      channel.mailbox.push(event)
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
      const frames: Array<Frame> = []
      for (const envelope of envelopes) {
        if (envelope.except === id) continue
        const frame = envelope.frame(serializer)
        if (Either.isRight(frame)) frames.push(frame.right)
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
          assigns: {},
          held: [],
          early: [],
          conn: undefined as unknown as ChannelConn,
          joined: false,
          running: false,
          ended: undefined
        }
        channel.conn = makeConn(channel)
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
        const deliver = deliverTo(channel)
        yield* Scope.extend(broker.subscribe(topic, deliver), channelScope)
        yield* send(Msg.reply(message.joinRef, message.ref, topic, "ok", response))
        channel.joined = true
        if (channel.early.length > 0) deliver(channel.early.splice(0))
        yield* Effect.all(channel.held.splice(0), { discard: true })
      }).pipe(Effect.annotateLogs("topic", message.topic))

    // Frames

    const handleFrame = (frame: Frame): Effect.Effect<void> => {
      const decoded = serializer.decode(frame)
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

    const run = Effect.gen(function*() {
      while (true) {
        if (inbox.length === 0) {
          if (!transportOpen) return
          yield* Effect.async<void>((resume) => {
            wake = () => resume(Effect.void)
            return Effect.sync(() => {
              wake = undefined
            })
          })
          wake = undefined
          continue
        }
        const frames = inbox.splice(0)
        lastReceived = yield* Clock.currentTimeMillis
        for (const frame of frames) {
          if (closed !== undefined) break
          yield* handleFrame(frame)
        }
      }
    })

    // Life cycle: finalizers run in reverse, so channels close (running
    // `leave`), then the transport is closed, then `disconnect` runs.

    yield* broadcaster.register({
      lastActivity: () => lastReceived,
      heartbeatMillis,
      expire: () => close(CloseCode.normal, "heartbeat timeout")
    })
    yield* Effect.addFinalizer(() =>
      handler.disconnect(socket).pipe(
        Effect.catchAllCause((cause) => Effect.logError("disconnect failed", cause))
      )
    )
    yield* Effect.addFinalizer(() => Effect.sync(() => close(CloseCode.goingAway, "server shutting down")))
    if (params.id !== undefined) {
      yield* broker.subscribe(params.id, (envelopes) => {
        if (envelopes.some((envelope) => envelope.message.event === disconnectEvent)) {
          close(CloseCode.goingAway, "disconnected by the server")
        }
      })
    }

    const receive = (frame: Frame): void => {
      if (closed !== undefined) return
      if (frameSize(frame) > options.maxFrameSize) {
        return close(CloseCode.messageTooBig, "frame too large")
      }
      if (inbox.length >= options.inboundQueueLimit) {
        return close(CloseCode.policyViolation, "too many messages queued")
      }
      inbox.push(frame)
      wake?.()
    }
    const transportClosed = () => {
      transportOpen = false
      wake?.()
    }
    return { id, socket, receive, transportClosed, run }
  })
