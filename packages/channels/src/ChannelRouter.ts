/**
 * Routes topics to channel hooks by pattern, like Phoenix's
 * `channel "rooms:*", RoomChannel`: a pattern ending in `*` matches every topic
 * that starts with what precedes the `*`; any other pattern matches its topic
 * exactly. The first matching pattern, in the order given, wins; a join to a
 * topic that no pattern matches is answered `{"reason": "unmatched topic"}`.
 *
 * ```ts
 * const Channels = ChannelRouter.layer({
 *   "rooms:*": RoomChannel,
 *   "user:*": UserChannel
 * }, { connect: authenticate })
 * ```
 *
 * @since 0.1.0
 */
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { ChannelHooks, Service, SocketHooks } from "./ChannelHandler.js"
import { ChannelHandler, provideHooks, provideSocketHooks } from "./ChannelHandler.js"

/**
 * Channel hooks by topic pattern.
 *
 * @since 0.1.0
 * @category models
 */
export type Routes<R> = Readonly<Record<string, ChannelHooks<R>>>

/**
 * Whether a topic matches a pattern.
 *
 * @since 0.1.0
 * @category predicates
 */
export const matches = (pattern: string, topic: string): boolean =>
  pattern.endsWith("*") ? topic.startsWith(pattern.slice(0, -1)) : pattern === topic

/**
 * A handler that dispatches each topic to the hooks of its pattern.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <R, R2 = never>(
  routes: Routes<R>,
  socket: SocketHooks<R2> = {}
): Effect.Effect<Service, never, R | R2> =>
  Effect.map(Effect.context<R | R2>(), (context) => {
    const table = Object.entries(routes).map(([pattern, hooks]) => [pattern, provideHooks(hooks, context, pattern)] as const)
    return {
      ...provideSocketHooks(socket, context),
      channel: (topic) => table.find(([pattern]) => matches(pattern, topic))?.[1]
    }
  })

/**
 * Provides a `ChannelHandler` that routes topics by pattern.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <R, R2 = never>(
  routes: Routes<R>,
  socket: SocketHooks<R2> = {}
): Layer.Layer<ChannelHandler, never, R | R2> => Layer.effect(ChannelHandler, make(routes, socket))
