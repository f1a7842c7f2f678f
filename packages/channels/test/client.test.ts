/**
 * The official `phoenix` client, unchanged, against the server.
 */
import { ChannelHandler } from "@effect-channels/core"
import { describe, expect, it } from "@effect/vitest"
import * as Effect from "effect/Effect"
import type * as Scope from "effect/Scope"
import { type Channel, Socket } from "phoenix"
import WebSocket from "ws"
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

const client = (url: string, options: { readonly authToken?: string } = {}): Effect.Effect<Socket, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const socket = new Socket(url, { transport: WebSocket, ...options })
      socket.connect()
      return socket
    }),
    (socket) => Effect.sync(() => socket.disconnect())
  )

const joinChannel = (socket: Socket, topic: string) =>
  Effect.async<readonly [Channel, unknown], unknown>((resume) => {
    const channel = socket.channel(topic, {})
    channel.join()
      .receive("ok", (response: unknown) => resume(Effect.succeed([channel, response] as const)))
      .receive("error", (reason: unknown) => {
        channel.leave()
        resume(Effect.fail(reason))
      })
  })

const next = (channel: Channel, event: string, timeout = 2000) =>
  Effect.async<unknown>((resume) => {
    const ref = channel.on(event, (payload: unknown) => {
      channel.off(event, ref)
      resume(Effect.succeed(payload))
    })
  }).pipe(Effect.timeoutFail({ duration: timeout, onTimeout: () => `no ${event}` }))

const pushed = (channel: Channel, event: string, payload: object) =>
  Effect.async<readonly [string, unknown]>((resume) => {
    channel.push(event, payload)
      .receive("ok", (response: unknown) => resume(Effect.succeed(["ok", response] as const)))
      .receive("error", (response: unknown) => resume(Effect.succeed(["error", response] as const)))
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
      const bobHears = next(bob, "whisper")
      const adaHears = Effect.either(next(ada, "whisper", 300))
      ada.push("whisper", { body: "psst" })
      expect(yield* bobHears).toEqual({ body: "psst" })
      expect((yield* adaHears)._tag).toBe("Left")
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
