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
import * as Registry from "./internal/registry.js"
import { Broker, Envelope, layerLocal as localBroker } from "./Broker.js"
import type { Broadcast, Payload } from "./protocol/Message.js"
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
  /** Broadcasts an event to every subscriber of a topic. */
  readonly broadcast: (topic: string, event: string, payload?: Payload) => Effect.Effect<void>
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
 * @category constructors
 */
export const make: Effect.Effect<Service, never, Broker | Scope.Scope> = Effect.gen(function*() {
  const broker = yield* Broker
  const registry = yield* Registry.make
  return {
    broadcast: (topic, event, payload = {}) =>
      broker.publish(new Envelope(Message.broadcast(topic, event, payload))),
    connected: Effect.sync(registry.size),
    disconnect: (id) => broker.publish(new Envelope(Message.broadcast(id, disconnectEvent, {}))),
    broadcasts: Stream.unwrapScoped(Effect.map(broker.published, (envelopes) =>
      Stream.map(Stream.fromQueue(envelopes), (envelope) => envelope.message))),
    register: registry.register,
    unregister: registry.unregister
  }
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<ChannelBroadcaster, never, Broker> = Layer.scoped(ChannelBroadcaster, make)

/**
 * The broadcaster over a broker local to this process: the default setup.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerLocal: Layer.Layer<ChannelBroadcaster | Broker> = Layer.provideMerge(layer, localBroker)
