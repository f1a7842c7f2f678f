/**
 * The chat's channel: anyone may join `rooms:lobby`, any other topic is
 * refused.
 *
 * - A join with a `user` parameter is tracked in the lobby's presence under
 *   that name, with `online_at` (the join time, in ms since the epoch), and
 *   announced as `user:entered`. A join without one is not tracked (it gets
 *   the presence state, to see who is there) and is announced with
 *   `user: null`. A join with `rejoin: true` (a client coming back after a
 *   lost connection, as the chat page does) is tracked but not announced
 *   again.
 * - `rename {user}` (a non-empty, trimmed name of at most 40 characters)
 *   moves the member's presence to the new name, keeping its `online_at`,
 *   broadcasts `user:renamed {from, to}` (`from` is null for a member that
 *   had no name) and replies `ok {user}`; an invalid name is answered with
 *   an `invalid payload` error reply. Later rejoins carry the new name.
 * - `new:msg` is re-broadcast to every member, the sender included; `ping`
 *   is answered with its own payload.
 */
import { type Broker, type ChannelConn, ChannelEvent, ChannelHandler, Presence } from "@effect-channels/core"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"

export const lobby = "rooms:lobby"

const userOf = (payload: unknown): string | null => {
  if (typeof payload !== "object" || payload === null) return null
  const user = (payload as { readonly user?: unknown }).user
  return typeof user === "string" ? user : null
}

const isRejoin = (payload: unknown): boolean =>
  typeof payload === "object" && payload !== null && (payload as { readonly rejoin?: unknown }).rejoin === true

const Rename = Schema.Struct({ user: Schema.NonEmptyTrimmedString.pipe(Schema.maxLength(40)) })

/** The channel's own record of its member: the name it is tracked under and since when. */
interface Member {
  readonly user: string | null
  readonly onlineAt: number
}

const memberOf = (conn: ChannelConn.ChannelConn) =>
  Effect.map(conn.assigns, (assigns) => assigns["member"] as Member)

export interface Options {
  /** Whether a join broadcasts `user:entered` (default true; the benchmark turns it off). */
  readonly announceJoins?: boolean | undefined
  /**
   * Whether `new:msg` broadcasts go through `handleOut`, unchanged (default
   * false): the benchmark's measure of what an intercepted event costs
   * against the fastlane.
   */
  readonly interceptMessages?: boolean | undefined
}

const passThrough: ChannelHandler.Intercept = {
  events: ["new:msg"],
  handleOut: (_conn, _event, payload) => Effect.succeed(Option.some(payload))
}

const rename = (conn: ChannelConn.ChannelConn, event: ChannelEvent.ChannelEvent) =>
  Effect.gen(function*() {
    const { user } = yield* ChannelEvent.decodePayload(event, Rename)
    const member = yield* memberOf(conn)
    if (member.user !== user) {
      const presence = yield* Presence.Presence
      if (member.user !== null) yield* presence.untrack(conn, lobby, member.user)
      yield* presence.track(conn, lobby, user, { online_at: member.onlineAt })
      yield* conn.assign("member", { user, onlineAt: member.onlineAt } satisfies Member)
      yield* conn.broadcast("user:renamed", { from: member.user, to: user })
    }
    yield* conn.reply(event, "ok", { user })
  })

export const makeHooks = (options: Options = {}): ChannelHandler.Hooks<Presence.Presence> => ({
  intercept: options.interceptMessages === true ? passThrough : undefined,
  join: (conn, event) =>
    Effect.gen(function*() {
      if (event.topic !== lobby) return conn.refuseJoin({ reason: "unauthorized" })
      const user = userOf(event.payload)
      const onlineAt = Date.now()
      yield* conn.assign("member", { user, onlineAt } satisfies Member)
      if (options.announceJoins !== false && !isRejoin(event.payload)) {
        yield* conn.broadcast("user:entered", { user })
      }
      const presence = yield* Presence.Presence
      if (user !== null) yield* presence.track(conn, lobby, user, { online_at: onlineAt })
      else yield* presence.pushState(conn)
      return conn.allowJoin()
    }),
  incoming: (conn, event) => {
    switch (event.event) {
      case "new:msg":
        return conn.broadcast("new:msg", event.payload)
      case "ping":
        return conn.reply(event, "ok", event.payload)
      case "rename":
        return rename(conn, event)
      default:
        return Effect.void
    }
  }
})

/** The lobby, with its presence (this process's, unless another is given); needs a `Broker`. */
export const layerWith = <E = never, R = never>(
  options: Options,
  presence: Layer.Layer<Presence.Presence, E, R | Broker.Broker> = Presence.layer()
) => ChannelHandler.layer(makeHooks(options)).pipe(Layer.provide(presence))

export const layer = layerWith({})
