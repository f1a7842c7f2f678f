/**
 * The `ChannelBroadcaster` reaches channels from anywhere in an application,
 * an HTTP route or a background fiber: it broadcasts to a topic, counts the
 * connected clients, disconnects every connection of a socket id, and
 * observes broadcasts as a `Stream`.
 *
 * ```ts
 * const announce = Effect.gen(function*() {
 *   const broadcaster = yield* ChannelBroadcaster
 *   yield* broadcaster.broadcast("rooms:lobby", "new:msg", { body: "hello" })
 * })
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { broadcastRefusal } from "./internal/frameSize.js"
import * as Registry from "./internal/registry.js"
import { Broker, Envelope, layerLocal as localBroker } from "./Broker.js"
import type { UnrecoverablePayload } from "./ChannelHistory.js"
import type { Broadcast, MessageTooLarge, Payload } from "./protocol/Message.js"
import * as Message from "./protocol/Message.js"

/**
 * The event that, broadcast to a socket id's topic, closes every connection
 * with that id (close code 1001: clients reconnect).
 *
 * @since 0.1.0
 * @category constants
 */
export const disconnectEvent = "disconnect"

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Broadcasts an event to every subscriber of a topic; fails, sending
   * nothing, with `MessageTooLarge` when its frame is over `maxOutboundSize`,
   * with `UnrecoverablePayload` for a binary payload on a topic with a history.
   */
  readonly broadcast: (
    topic: string,
    event: string,
    payload?: Payload
  ) => Effect.Effect<void, MessageTooLarge | UnrecoverablePayload>
  /** The number of connections open in this process. */
  readonly connected: Effect.Effect<number>
  /** Closes every connection whose socket id is `id`. */
  readonly disconnect: (id: string) => Effect.Effect<void>
  /** Every broadcast sent through this process. */
  readonly broadcasts: Stream.Stream<Broadcast>
  /**
   * Registers a connection until {@link Service.unregister}: it is counted as
   * connected, and expired once silent for its heartbeat timeout (used by the
   * connection runtime, which unregisters as its scope closes).
   */
  readonly register: (registration: Registration) => Effect.Effect<void>
  readonly unregister: (registration: Registration) => Effect.Effect<void>
}

/**
 * A connection as the broadcaster tracks it (methods, so that a connection
 * can be its own registration).
 *
 * @since 0.1.0
 * @category models
 */
export interface Registration {
  /** When the connection last received a message, in `Clock` milliseconds. */
  lastActivity(): number
  readonly heartbeatMillis: number
  /** Closes the connection for silence; may be called more than once. */
  expire(): void
}

/**
 * @since 0.1.0
 * @category tags
 */
export class ChannelBroadcaster extends Context.Tag("@effect-channels/ChannelBroadcaster")<
  ChannelBroadcaster,
  Service
>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The largest broadcast sent, in bytes of its encoded frame; default 1 MiB
   * (the socket's default `maxFrameSize`). Broadcasts made through a
   * channel (`conn.broadcast`) have the socket's limit instead.
   */
  readonly maxOutboundSize?: number | undefined
}

/**
 * A broadcaster with `options`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeWith = (options: Options): Effect.Effect<Service, never, Broker | Scope.Scope> => Effect.gen(function*() {
  const broker = yield* Broker
  const registry = yield* Registry.make
  const limit = options.maxOutboundSize ?? 1024 * 1024
  return {
    broadcast: (topic, event, payload = {}) =>
      Effect.suspend(() => {
        const envelope = new Envelope(Message.broadcast(topic, event, payload))
        const refused = broadcastRefusal(envelope, limit, broker.history)
        return refused === undefined ? broker.publish(envelope) : Effect.fail(refused)
      }),
    connected: Effect.sync(registry.size),
    disconnect: (id) => broker.publish(new Envelope(Message.broadcast(id, disconnectEvent, {}))),
    broadcasts: Stream.unwrapScoped(Effect.map(broker.published, (envelopes) =>
      Stream.map(Stream.fromQueue(envelopes), (envelope) => envelope.message))),
    register: registry.register,
    unregister: registry.unregister
  }
})

/**
 * A broadcaster with the default options.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, never, Broker | Scope.Scope> = makeWith({})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ChannelBroadcaster, never, Broker> = Layer.scoped(ChannelBroadcaster, make)

/**
 * The broadcaster with `options`, over the broker in context.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<ChannelBroadcaster, never, Broker> =>
  Layer.scoped(ChannelBroadcaster, makeWith(options))

/**
 * The broadcaster over a broker local to this process: the default setup.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLocal: Layer.Layer<ChannelBroadcaster | Broker> = Layer.provideMerge(layer, localBroker)
