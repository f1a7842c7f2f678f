/**
 * The broker carries broadcasts between the connections subscribed to a
 * topic. The default, {@link layerLocal}, keeps one Effect `PubSub` per topic
 * in this process: created on first subscribe, shut down on last unsubscribe.
 * A broker that spans processes (Redis) implements the same interface.
 *
 * Subscribers are objects with a synchronous `deliver`, called in publication
 * order by one fiber per topic: a broadcast to N connections costs one fiber
 * wake-up and N direct writes, not N fiber wake-ups. Broadcasts published
 * while the fiber was busy reach each subscriber as one batch, which a
 * connection writes in one system call. A subscriber must not block; a
 * connection writes to its transport's buffer, whose bound it checks.
 *
 * A subscription costs its topic one set entry: the subscriber is its own
 * handle, given back to `unsubscribe`, so that an idle channel holds no
 * closure or scope of the broker's. Whoever subscribes owns the subscription
 * and ends it (the connection runtime does, when a channel ends);
 * `subscribeScoped` ties it to a scope instead.
 *
 * A broadcast travels as an {@link Envelope}, which encodes its message once
 * per serializer however many subscribers write it (Phoenix's "fastlane").
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import type * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import type * as Queue from "effect/Queue"
import type * as Scope from "effect/Scope"
import type { Config as HistoryConfig, Position } from "./ChannelHistory.js"
import { format } from "./ChannelHistory.js"
import * as internal from "./internal/localBroker.js"
import { byteLength } from "./internal/frameSize.js"
import type { Broadcast, Frame } from "./protocol/Message.js"
import * as Message from "./protocol/Message.js"
import type { Serializer, UnencodableMessage } from "./protocol/Serializer.js"

const frameBytes = (frame: Either.Either<Frame, UnencodableMessage>) =>
  frame._tag === "Right" ? byteLength(frame.right) : 0

/**
 * A broadcast on its way to subscribers.
 *
 * @since 0.1.0
 * @category models
 */
export class Envelope {
  private v1: Either.Either<Frame, UnencodableMessage> | undefined
  private v2: Either.Either<Frame, UnencodableMessage> | undefined
  private v1Bytes: number | undefined
  private v2Bytes: number | undefined

  constructor(
    readonly message: Broadcast,
    /** The connection that must not receive it (`broadcastFrom`), if any. */
    readonly except: string | undefined = undefined,
    /** Its position in its topic's history, for a topic that keeps one (see `ChannelHistory`). */
    readonly position: Position | undefined = undefined
  ) {}

  /** The same broadcast at a position of its topic's history. */
  at(position: Position): Envelope {
    return new Envelope(this.message, this.except, position)
  }

  /** The message encoded by a serializer, computed once per serializer. */
  frame(serializer: Serializer): Either.Either<Frame, UnencodableMessage> {
    if (serializer.vsn === "2.0.0") return this.v2 ??= this.encode(serializer)
    return this.v1 ??= this.encode(serializer)
  }

  /** A broadcast with a position carries it in its `ref`, which only a push has on the wire. */
  private encode(serializer: Serializer): Either.Either<Frame, UnencodableMessage> {
    const { event, payload, topic } = this.message
    return this.position === undefined
      ? serializer.encode(this.message)
      : serializer.encode(Message.push(null, topic, event, payload, format(this.position)))
  }

  /** The size in bytes of the encoded message (0 if it cannot be encoded), computed once per serializer. */
  byteLength(serializer: Serializer): number {
    if (serializer.vsn === "2.0.0") return this.v2Bytes ??= frameBytes(this.frame(serializer))
    return this.v1Bytes ??= frameBytes(this.frame(serializer))
  }
}

/**
 * Receives the envelopes of a topic, in order, in batches. `deliver` is
 * called synchronously: it must not block or throw.
 *
 * @since 0.1.0
 * @category models
 */
export interface Subscriber {
  readonly deliver: (envelopes: ReadonlyArray<Envelope>) => void
}

/**
 * What a topic's history holds for a client that rejoins.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recovery {
  /** The topic's position now; `undefined` when the history cannot be read (its store is unreachable). */
  readonly position: Position | undefined
  /**
   * The broadcasts after the position the client gave, in order; `undefined`
   * when the history does not hold every one of them (or no position was given).
   */
  readonly missed: ReadonlyArray<Envelope> | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /** Delivers an envelope to every subscriber of its topic. */
  readonly publish: (envelope: Envelope) => Effect.Effect<void>
  /**
   * Delivers an envelope to this process's subscribers of its topic only. A
   * broker that spans processes does not forward it: presence diffs take
   * this way, since every process derives them from its own copy of the
   * presences, as Phoenix's trackers do. In a broker local to the process,
   * it is `publish`.
   */
  readonly publishLocal: (envelope: Envelope) => Effect.Effect<void>
  /** Subscribes to a topic until {@link Service.unsubscribe}; subscribing twice is once. */
  readonly subscribe: (topic: string, subscriber: Subscriber) => Effect.Effect<void>
  /** Ends a subscription; nothing if there is none. */
  readonly unsubscribe: (topic: string, subscriber: Subscriber) => Effect.Effect<void>
  /** How many subscribers this process has on a topic. */
  readonly subscribers: (topic: string) => Effect.Effect<number>
  /** Subscribes, for the life of the scope, to every envelope published through this process. */
  readonly published: Effect.Effect<Queue.Dequeue<Envelope>, never, Scope.Scope>
  /**
   * The histories it keeps. `publish` gives each broadcast on such a topic
   * its position, and delivers them in the order of their positions.
   */
  readonly history: HistoryConfig
  /**
   * What a topic's history holds after `since`; `undefined` for a topic that
   * keeps none. Called by a joining channel after it has subscribed, so that
   * what is published meanwhile reaches it live (the channel drops what it
   * has had, by position).
   */
  readonly recover: (topic: string, since: Position | undefined) => Effect.Effect<Recovery | undefined>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class Broker extends Context.Tag("@effect-channels/Broker")<Broker, Service>() {}

/**
 * Subscribes to a topic for the life of the scope.
 *
 * @since 0.1.0
 * @category combinators
 */
export const subscribeScoped = (
  broker: Service,
  topic: string,
  subscriber: Subscriber
): Effect.Effect<void, never, Scope.Scope> =>
  Effect.acquireRelease(broker.subscribe(topic, subscriber), () => broker.unsubscribe(topic, subscriber))

/**
 * A broker local to this process, with one unbounded `PubSub` per topic.
 * Unbounded, so that one slow subscriber never holds back the others: each
 * connection bounds its own outbound buffer instead. The histories of
 * `ChannelHistory` are kept in memory.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeLocal: Effect.Effect<Service, never, Scope.Scope> = internal.make

/**
 * @since 0.1.0
 * @category layers
 */
export const layerLocal: Layer.Layer<Broker> = Layer.scoped(Broker, makeLocal)
