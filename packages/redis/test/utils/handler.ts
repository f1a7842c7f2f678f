/**
 * The channel the tests serve on every node: any `rooms:*` topic; `shout`
 * is re-broadcast to the topic, `shout_from` to the topic but the sender,
 * both binary-safe. The socket id is the `id` connect parameter.
 */
import { ChannelHandler } from "@effect-channels/core"
import * as Effect from "effect/Effect"

export const Rooms = ChannelHandler.layer({
  connect: (info) => Effect.succeed({ id: info.params["id"] as string | undefined }),
  join: (conn) => Effect.succeed(conn.allowJoin()),
  incoming: (conn, event) => {
    switch (event.event) {
      case "shout":
        return Effect.zipRight(conn.broadcast("shout", event.payload), conn.reply(event, "ok", {}))
      case "shout_from":
        return Effect.zipRight(conn.broadcastFrom("shout", event.payload), conn.reply(event, "ok", {}))
      default:
        return Effect.void
    }
  }
})
