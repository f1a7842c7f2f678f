/**
 * The official `phoenix` client, unchanged, against the server.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { join as joinChannel, next, push as pushed, record, socket as client } from "./utils/phoenixClient.js"
import { startServer, transports } from "./utils/server.js"

const Handler = ChannelHandler.layer({
  connect: (info) => Effect.succeed({ assigns: { token: info.authToken._tag === "Some" ? info.authToken.value : null } }),
  join: (conn, event) =>
    event.topic === "room:secret"
      ? Effect.succeed(conn.refuseJoin({ reason: "unauthorized" }))
      : Effect.succeed(conn.allowJoin({ token: conn.socket.assigns["token"] })),
  incoming: (conn, event) => {
    switch (event.event) {
      case "shout":
        return conn.broadcast("shout", event.payload)
      case "whisper":
        return conn.broadcastFrom("whisper", event.payload)
      case "echo":
        return conn.reply(event, "ok", event.payload)
      case "deny":
        return conn.reply(event, "error", { reason: "denied" })
      case "poke":
        return conn.push("poked", event.payload)
      default:
        return Effect.void
    }
  }
})

describe.each(transports)("the phoenix client over %s", (transport) => {
  it.scopedLive("joins, is refused, pushes with replies, receives pushes", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Handler, { transport })
      const socket = yield* client(server.socketUrl)
      const [room, response] = yield* joinChannel(socket, "room:1")
      expect(response).toEqual({ token: null })
      expect(yield* Effect.flip(joinChannel(socket, "room:secret"))).toEqual({ reason: "unauthorized" })
      expect(yield* pushed(room, "echo", { n: 1 })).toEqual(["ok", { n: 1 }])
      expect(yield* pushed(room, "deny", {})).toEqual(["error", { reason: "denied" }])
      const poked = next(room, "poked")
      room.push("poke", { at: 1 })
      expect(yield* poked).toEqual({ at: 1 })
    }))

  it.scopedLive("broadcast reaches every member, broadcastFrom all but the sender, the broadcaster everyone", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Handler, { transport })
      const [ada] = yield* joinChannel(yield* client(server.socketUrl), "room:1")
      const [bob] = yield* joinChannel(yield* client(server.socketUrl), "room:1")
      const both = Effect.all([next(ada, "shout"), next(bob, "shout")])
      ada.push("shout", { body: "hi" })
      expect(yield* both).toEqual([{ body: "hi" }, { body: "hi" }])
      const adaSaw = record(ada)
      const bobHears = next(bob, "whisper")
      ada.push("whisper", { body: "psst" })
      expect(yield* bobHears).toEqual({ body: "psst" })
      // What reached bob has had time to reach ada: a round trip more.
      yield* pushed(ada, "echo", {})
      yield* Effect.sleep("100 millis")
      expect(adaSaw.map(({ event }) => event)).not.toContain("whisper")
      const announced = Effect.all([next(ada, "news"), next(bob, "news")])
      yield* server.broadcaster.broadcast("room:1", "news", { from: "server" })
      expect(yield* announced).toEqual([{ from: "server" }, { from: "server" }])
    }))

  it.scopedLive("binary payloads arrive as ArrayBuffers", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Handler, { transport })
      const [room] = yield* joinChannel(yield* client(server.socketUrl), "room:1")
      const heard = next(room, "shout")
      room.push("shout", new Uint8Array([1, 2, 3]).buffer as unknown as object)
      expect(Array.from(new Uint8Array((yield* heard) as ArrayBuffer))).toEqual([1, 2, 3])
    }))

  it.scopedLive("authToken reaches connect", () =>
    Effect.gen(function*() {
      const server = yield* startServer(Handler, { transport })
      const socket = yield* client(server.socketUrl, { authToken: "secret-token" })
      const [, response] = yield* joinChannel(socket, "room:1")
      expect(response).toEqual({ token: "secret-token" })
    }))
})
