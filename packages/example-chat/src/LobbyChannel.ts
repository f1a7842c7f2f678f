/**
 * The chat's channel: anyone may join `rooms:lobby`, any other topic is
 * refused. A join announces `user:entered`. A member who joins with a `user`
 * parameter is tracked in the lobby's presence under that name, with
 * `online_at` (the join time, in ms since the epoch); one without is not
 * tracked, but gets the presence state to see who is there. `new:msg` is
 * re-broadcast to every member, the sender included; `ping` is answered with
 * its own payload.
 */
import { ChannelHandler, Presence } from "@effect-channels/core"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"

export const lobby = "rooms:lobby"

const userOf = (payload: unknown): string | null => {
  if (typeof payload !== "object" || payload === null) return null
  const user = (payload as { readonly user?: unknown }).user
  return typeof user === "string" ? user : null
}

export interface Options {
  /** Whether a join broadcasts `user:entered` (default true; the benchmark turns it off). */
  readonly announceJoins?: boolean | undefined
}

export const makeHooks = (options: Options = {}): ChannelHandler.Hooks<Presence.Presence> => ({
  join: (conn, event) =>
    Effect.gen(function*() {
      if (event.topic !== lobby) return conn.refuseJoin({ reason: "unauthorized" })
      const user = userOf(event.payload)
      if (options.announceJoins !== false) yield* conn.broadcast("user:entered", { user })
      const presence = yield* Presence.Presence
      if (user !== null) yield* presence.track(conn, lobby, user, { online_at: Date.now() })
      else yield* presence.pushState(conn)
      return conn.allowJoin()
    }),
  incoming: (conn, event) => {
    switch (event.event) {
      case "new:msg":
        return conn.broadcast("new:msg", event.payload)
      case "ping":
        return conn.reply(event, "ok", event.payload)
      default:
        return Effect.void
    }
  }
})

/** The lobby, with its presence; needs a `Broker`. */
export const layerWith = (options: Options) =>
  ChannelHandler.layer(makeHooks(options)).pipe(Layer.provide(Presence.layer()))

export const layer = layerWith({})
