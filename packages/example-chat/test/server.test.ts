/**
 * The chat server as a newcomer meets it: its HTTP contract, and a clean
 * shutdown on SIGTERM.
 */
import { describe, expect, it } from "@effect/vitest"
import * as HttpServer from "@effect/platform/HttpServer"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Socket } from "phoenix"
import WebSocket from "ws"
import * as ChatServer from "../src/ChatServer.js"

const joinLobby = (url: string, params: object) =>
  Effect.async<{ readonly socket: Socket; readonly messages: Array<unknown>; readonly closes: Array<number> }>((resume) => {
    const messages: Array<unknown> = []
    const closes: Array<number> = []
    const socket = new Socket(url, { transport: WebSocket, params, reconnectAfterMs: () => 60_000 })
    socket.onClose((event: { code: number }) => {
      closes.push(event.code)
    })
    socket.connect()
    const channel = socket.channel("rooms:lobby", params)
    channel.on("new:msg", (payload: unknown) => {
      messages.push(payload)
    })
    channel.join().receive("ok", () => resume(Effect.succeed({ socket, messages, closes })))
  })

const until = (check: () => boolean, timeout = 5000) =>
  Effect.promise(async () => {
    const deadline = Date.now() + timeout
    while (!check()) {
      if (Date.now() > deadline) throw new Error("timed out")
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })

describe("the chat server", () => {
  it.scopedLive("PUT /broadcast reaches the lobby and answers the connected count; / and /phoenix.js are served", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(ChatServer.layer({ host: "127.0.0.1", port: 0 }))
      const address = Context.get(context, HttpServer.HttpServer).address
      const port = address._tag === "TcpAddress" ? address.port : 0
      const base = `http://127.0.0.1:${port}`
      const ada = yield* joinLobby(`ws://127.0.0.1:${port}/socket`, { user: "ada" })
      yield* Effect.addFinalizer(() => Effect.sync(() => ada.socket.disconnect()))
      const response = yield* Effect.promise(() =>
        fetch(`${base}/broadcast`, {
          method: "PUT",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ user: "system", body: "hello" })
        })
      )
      expect(yield* Effect.promise(() => response.json())).toEqual({ connected: 1 })
      yield* until(() => ada.messages.length === 1)
      expect(ada.messages).toEqual([{ user: "system", body: "hello" }])
      const invalid = yield* Effect.promise(() => fetch(`${base}/broadcast`, { method: "PUT", body: "{}" }))
      expect(invalid.status).toBe(400)
      const page = yield* Effect.promise(() => fetch(`${base}/`).then((r) => r.text()))
      expect(page).toContain(`<script src="/phoenix.js"></script>`)
      const client = yield* Effect.promise(() => fetch(`${base}/phoenix.js`).then((r) => r.text()))
      expect(client).toContain("Presence")
    }))

  it.live("SIGTERM: every client is closed with 1001, disconnect runs once each, the process exits 0", () =>
    Effect.gen(function*() {
      const port = 30000 + Math.floor(Math.random() * 20000)
      const entry = fileURLToPath(new URL("./fixtures/server.ts", import.meta.url))
      const child = spawn(process.execPath, ["--import", "tsx", entry], {
        env: { ...process.env, PORT: String(port) },
        stdio: ["ignore", "pipe", "inherit"]
      })
      let output = ""
      child.stdout.on("data", (data) => (output += String(data)))
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
      yield* until(() => output.includes("Listening"), 20_000)
      const ada = yield* joinLobby(`ws://127.0.0.1:${port}/socket`, { user: "ada" })
      const bob = yield* joinLobby(`ws://127.0.0.1:${port}/socket`, { user: "bob" })
      child.kill("SIGTERM")
      const code = yield* Effect.promise(() => exited)
      expect(code).toBe(0)
      expect(ada.closes).toEqual([1001])
      expect(bob.closes).toEqual([1001])
      const lines = output.split("\n").filter((line) => line.startsWith("disconnect"))
      expect(lines.sort()).toEqual(["disconnect ada", "disconnect bob"])
      ada.socket.disconnect()
      bob.socket.disconnect()
    }), 30_000)
})
