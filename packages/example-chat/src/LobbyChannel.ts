/**
 * The chat's channel: anyone may join `rooms:lobby`, any other topic is
 * refused. A join announces `user:entered`; `new:msg` is re-broadcast to every
 * member, the sender included; `ping` is answered with its own payload.
 */
import { ChannelHandler } from "@effect-channels/core"
import * as Effect from "effect/Effect"

export const lobby = "rooms:lobby"

const userOf = (payload: unknown): string | null => {
  if (typeof payload !== "object" || payload === null) return null
  const user = (payload as { readonly user?: unknown }).user
  return typeof user === "string" ? user : null
}

export const hooks: ChannelHandler.Hooks = {
  join: (conn, event) =>
    Effect.gen(function*() {
      if (event.topic !== lobby) return conn.refuseJoin({ reason: "unauthorized" })
      yield* conn.broadcast("user:entered", { user: userOf(event.payload) })
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
}

export const layer = ChannelHandler.layer(hooks)
