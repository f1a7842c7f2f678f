/**
 * The socket's admission and serving, as Phoenix's endpoint does it, for
 * each way of serving: a refused connect answered with its own status and
 * body, the connect log (levels, filtered parameters), the connect info (URI,
 * peer, the headers the socket keeps and nothing else), several sockets on
 * one server, and the drain of the connections when the server shuts down.
 */
import { ChannelBroadcaster, ChannelHandler, ChannelSocket } from "@effect-channels/core"
import type { ConnectInfo } from "@effect-channels/core/ChannelConn"
import { ConnectRefused } from "@effect-channels/core/ChannelHandler"
import { NodeChannelServer, NodeWebSocketServer } from "@effect-channels/node"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberRef from "effect/FiberRef"
import * as HashMap from "effect/HashMap"
import * as HashSet from "effect/HashSet"
import * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { createServer } from "node:http"
import { attemptUpgrade } from "./utils/http.js"
import * as LongPoll from "./utils/longPoll.js"
import { join, socket } from "./utils/phoenixClient.js"
import { connect, eventually, Refused } from "./utils/rawClient.js"
import { startServer, type Transport, transports } from "./utils/server.js"

/** A handler whose `connect` refuses as the `refuse` param says, and records the info it was given. */
const makeHandler = () => {
  const infos: Array<ConnectInfo> = []
  const kept: Array<ConnectInfo> = []
  const layer = ChannelHandler.layer({
    connect: (info) =>
      Effect.suspend(() => {
        infos.push(info)
        switch (info.params["refuse"]) {
          case "limited":
            return Effect.fail(new ConnectRefused({ reason: "rate limited", status: 429, body: "retry after 30 s" }))
          case "plain":
            return Effect.fail(new ConnectRefused({ reason: "bad token" }))
          case "not-an-error":
            return Effect.fail(new ConnectRefused({ reason: "confused", status: 200 }))
          default:
            return Effect.succeed({})
        }
      }),
    join: (conn) =>
      Effect.sync(() => {
        kept.push(conn.socket.connectInfo)
        return conn.allowJoin()
      })
  })
  return { layer, infos, kept }
}

interface Logged {
  readonly level: string
  readonly message: string
  readonly annotations: Record<string, unknown>
}

/** Records what is logged for the rest of the scope (the server's fibers too, when started after). */
const captureLogs = Effect.gen(function*() {
  const logs: Array<Logged> = []
  const logger = Logger.make(({ annotations, logLevel, message }) => {
    const parts = Array.isArray(message) ? message : [message]
    logs.push({
      level: logLevel.label,
      message: parts.map(String).join(" "),
      annotations: Object.fromEntries(HashMap.toEntries(annotations))
    })
  })
  yield* Effect.locallyScopedWith(FiberRef.currentLoggers, () => HashSet.make(logger))
  return logs
})

const connectLogs = (logs: ReadonlyArray<Logged>) =>
  logs.filter((log) => /^(CONNECTED TO|REFUSED CONNECTION TO) /.test(log.message))

describe.each(transports)("admission over %s", (transport) => {
  it.scopedLive("a refused connect is answered with its status and body: 429 with a body, 403 by default, 500 for a status that is no error", () =>
    Effect.gen(function*() {
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport, logLevel: false })
      const { port } = server
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=2.0.0&refuse=limited" }))
        .toEqual({ status: 429, body: "retry after 30 s" })
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=2.0.0&refuse=plain" }))
        .toEqual({ status: 403, body: "" })
      expect(yield* attemptUpgrade({ port, path: "/socket/websocket?vsn=2.0.0&refuse=not-an-error" }))
        .toEqual({ status: 500, body: "" })
      // A WebSocket client sees the status too.
      const refused = yield* Effect.flip(connect(server.socketUrl, { query: "vsn=2.0.0&refuse=limited" }))
      expect(refused).toBeInstanceOf(Refused)
      expect(refused.status).toBe(429)
      expect(yield* server.broadcaster.connected).toBe(0)
    }))

  it.scopedLive("each connect is logged as Phoenix logs it: result, socket, duration, transport, serializer, params with password filtered", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      const { layer } = makeHandler()
      const server = yield* startServer(layer, { transport })
      yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada&password=hunter2&user_password=x" })
      yield* Effect.flip(connect(server.socketUrl, { query: "vsn=1.0.0&refuse=plain" }))
      const [connected, refused] = connectLogs(logs)
      expect(connectLogs(logs)).toHaveLength(2)
      expect(connected!.level).toBe("INFO")
      expect(connected!.message).toMatch(/^CONNECTED TO \/socket in \d+(µs|ms)\n/)
      expect(connected!.message.split("\n").slice(1)).toEqual([
        "  Transport: websocket",
        "  Serializer: V2.JSONSerializer",
        `  Parameters: {"vsn":"2.0.0","user":"ada","password":"[FILTERED]","user_password":"[FILTERED]"}`
      ])
      expect(connected!.annotations).toMatchObject({
        socket: "/socket",
        transport: "websocket",
        serializer: "V2.JSONSerializer",
        result: "ok",
        params: { vsn: "2.0.0", user: "ada", password: "[FILTERED]", user_password: "[FILTERED]" }
      })
      expect(refused!.message).toMatch(/^REFUSED CONNECTION TO \/socket in \d+(µs|ms)\n/)
      expect(refused!.message).toContain("  Serializer: V1.JSONSerializer")
      expect(refused!.annotations).toMatchObject({ result: "error" })
      // No secret anywhere in what was logged.
      expect(JSON.stringify(logs)).not.toContain("hunter2")
    }))

  it.scopedLive("logLevel sets the level of the connect log, false turns it off; filterParameters replaces the default", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      const { layer } = makeHandler()
      const warning = yield* startServer(layer, { transport, logLevel: "Warning", filterParameters: ["token"] })
      yield* connect(warning.socketUrl, { query: "vsn=2.0.0&api_token=t0p&password=visible" })
      const silent = yield* startServer(layer, { transport, logLevel: false })
      yield* connect(silent.socketUrl, { query: "vsn=2.0.0&user=bob" })
      yield* Effect.flip(connect(silent.socketUrl, { query: "vsn=2.0.0&refuse=plain" }))
      const connects = connectLogs(logs)
      expect(connects.map((log) => log.level)).toEqual(["WARN"])
      expect(connects[0]!.annotations["params"]).toEqual({ vsn: "2.0.0", api_token: "[FILTERED]", password: "visible" })
    }))

  it.scopedLive("connect info: the URI, the peer's address and port; only the headers the socket keeps, the same in connect and for the connection's life", () =>
    Effect.gen(function*() {
      const { infos, kept, layer } = makeHandler()
      const headers = {
        "X-Request-Id": "req-1",
        "X-Forwarded-For": "10.0.0.1",
        "User-Agent": "tester/1.0",
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        tracestate: "vendor=1",
        Authorization: "Bearer secret",
        Cookie: "session=abc",
        "X-Custom": "kept by name"
      }
      const server = yield* startServer(layer, { transport, logLevel: false })
      const client = yield* connect(server.socketUrl, { query: "vsn=2.0.0&user=ada", headers })
      const info = infos[0]!
      expect(info.uri).toEqual({
        scheme: "http",
        host: "127.0.0.1",
        port: server.port,
        path: "/socket/websocket",
        query: "vsn=2.0.0&user=ada"
      })
      const local = (client.ws as unknown as { readonly _socket: { readonly localPort: number } })._socket.localPort
      expect(info.peer).toEqual(Option.some({ address: "127.0.0.1", port: local }))
      expect(info.params).toEqual({ user: "ada" })
      // By default, as in Phoenix, no header is kept.
      expect(info.headers).toEqual({})

      const keeping = yield* startServer(layer, {
        transport,
        logLevel: false,
        connectInfo: { xHeaders: true, userAgent: true, traceContextHeaders: true, headers: ["Authorization"] }
      })
      const phoenix = yield* connect(keeping.socketUrl, { headers })
      yield* phoenix.send(["1", "1", "room:1", "phx_join", {}])
      yield* phoenix.next((message) => message[3] === "phx_reply")
      // Another server, another Host header: its own port, not the last connection's.
      expect(infos[1]!.uri.port).toBe(keeping.port)
      expect(infos[1]!.headers).toEqual({
        "x-request-id": "req-1",
        "x-forwarded-for": "10.0.0.1",
        "x-custom": "kept by name",
        "user-agent": "tester/1.0",
        traceparent: headers.traceparent,
        tracestate: "vendor=1",
        authorization: "Bearer secret"
      })
      // What the connection keeps is what connect saw: no cookie, no handshake header.
      expect(kept[0]).toBe(infos[1])
    }))
})

/** A handler that tells which socket served a join, and counts its disconnects. */
const named = (name: string) => {
  const disconnects: Array<string> = []
  const layer = ChannelHandler.layer({
    join: (conn) => Effect.succeed(conn.allowJoin({ socket: name })),
    disconnect: () => Effect.sync(() => disconnects.push(name))
  })
  return { layer, disconnects }
}

/** A service the sockets' handlers use, to see that a layer they share is built once. */
class Greeting extends Context.Tag("test/Greeting")<Greeting, { readonly text: string }>() {}

/**
 * Serves `mounts` on one server, the way `transport` says: `NodeChannelServer`
 * with `sockets`, or `ChannelSocket.routerOf` (with `ws`, or the portable
 * server); `outer` provides what the handlers require from outside.
 */
const startSockets = <const M extends ReadonlyArray<ChannelSocket.Mount<never, Greeting | ChannelBroadcaster.ChannelBroadcaster>>>(
  transport: Transport,
  mounts: M,
  outer: Layer.Layer<Greeting>
) =>
  Effect.gen(function*() {
    const listen = { port: 0, host: "127.0.0.1" }
    const served = transport === "server"
      ? HttpServer.serve(HttpRouter.empty).pipe(
        Layer.provideMerge(NodeChannelServer.layer(createServer, listen, { sockets: mounts }))
      )
      : Layer.unwrapScoped(Effect.map(ChannelSocket.routerOf(mounts), (router) => HttpServer.serve(router))).pipe(
        Layer.provideMerge(transport === "route" ? NodeWebSocketServer.layer : Layer.empty),
        Layer.provideMerge(NodeHttpServer.layer(createServer, listen))
      )
    const context = yield* Layer.build(
      served.pipe(Layer.provide(outer), Layer.provideMerge(ChannelBroadcaster.layerLocal))
    ).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    return { port: address.port, broadcaster: Context.get(context, ChannelBroadcaster.ChannelBroadcaster) }
  })

describe.each(transports)("several sockets over %s", (transport) => {
  it.scopedLive("each socket serves its path with its own handler and options; a layer the handlers share is built once", () =>
    Effect.gen(function*() {
      let builds = 0
      const greeting = Layer.sync(Greeting, () => {
        builds++
        return { text: "hello" }
      })
      // Each handler layer is provided the same greeting layer: built once, as in any layer graph.
      const greeted = (name: string) =>
        ChannelHandler.layer({
          join: (conn) => Effect.map(Greeting, (greeting) => conn.allowJoin({ socket: name, greeting: greeting.text }))
        }).pipe(Layer.provide(greeting))
      const admin = named("admin")
      const server = yield* startSockets(transport, [
        ChannelSocket.mount(greeted("users"), { path: "/socket", logLevel: false }),
        ChannelSocket.mount(greeted("live"), { path: "/live", logLevel: false, maxChannels: 1 }),
        ChannelSocket.mount(admin.layer, { path: "/admin", logLevel: false, checkOrigin: ["https://admin.example"] })
      ], Layer.succeed(Greeting, { text: "from outside" }))
      const base = `ws://127.0.0.1:${server.port}`
      const [, users] = yield* join(yield* socket(`${base}/socket`), "room:1")
      expect(users).toEqual({ socket: "users", greeting: "hello" })
      const live = yield* socket(`${base}/live`)
      const [, liveResponse] = yield* join(live, "room:1")
      expect(liveResponse).toEqual({ socket: "live", greeting: "hello" })
      // /live's own limit: a second channel is refused there, not on /socket.
      expect(yield* Effect.flip(join(live, "room:2"))).toEqual({ reason: "too many channels joined" })
      const [, adminResponse] = yield* join(yield* socket(`${base}/admin`), "ops")
      expect(adminResponse).toEqual({ socket: "admin" })
      expect(builds).toBe(1)
      // /admin's own origin check; /socket keeps the default (same host).
      const port = server.port
      expect((yield* attemptUpgrade({ port, path: "/admin/websocket", headers: { Origin: "https://evil.example" } })).status)
        .toBe(403)
      expect((yield* attemptUpgrade({ port, path: "/admin/websocket", headers: { Origin: "https://admin.example" } })).status)
        .toBe(101)
      expect((yield* attemptUpgrade({ port, path: "/socket/websocket", headers: { Origin: "https://admin.example" } })).status)
        .toBe(403)
      // One broadcaster for the server: every socket's connections count.
      yield* eventually(server.broadcaster.connected, (n) => n >= 3)
    }))

  it.scopedLive("each mounted socket serves its own long-poll endpoint, with its own handler", () =>
    Effect.gen(function*() {
      const longPoll = { secret: "test-secret" }
      const server = yield* startSockets(transport, [
        ChannelSocket.mount(named("users").layer, { path: "/socket", logLevel: false, longPoll }),
        ChannelSocket.mount(named("live").layer, { path: "/live", logLevel: false, longPoll })
      ], Layer.succeed(Greeting, { text: "" }))
      const base = `http://127.0.0.1:${server.port}`
      const [, live] = yield* join(yield* LongPoll.socket(`${base}/live`), "room:1", {}, 10_000)
      expect(live).toEqual({ socket: "live" })
      const [, users] = yield* join(yield* LongPoll.socket(`${base}/socket`), "room:1", {}, 10_000)
      expect(users).toEqual({ socket: "users" })
    }), 30_000)

  it.scopedLive("two sockets at one path are refused when the server is built", () =>
    Effect.gen(function*() {
      const { layer } = named("x")
      const exit = yield* Effect.exit(Effect.scoped(startSockets(transport, [
        ChannelSocket.mount(layer, { path: "/socket" }),
        ChannelSocket.mount(layer, { path: "/socket" })
      ], Layer.succeed(Greeting, { text: "" }))))
      expect(Exit.isFailure(exit)).toBe(true)
      expect(String(exit._tag === "Failure" ? exit.cause : "")).toContain("two sockets at /socket")
    }))
})

interface Watched {
  readonly closes: Array<{ readonly at: number; readonly code: number }>
}

/** Raw clients on `url`, each recording when it saw its close and with which code. */
const watchedClients = (url: string, count: number) =>
  Effect.gen(function*() {
    const watched: Watched = { closes: [] }
    for (let i = 0; i < count; i++) {
      const client = yield* connect(url, { query: `vsn=2.0.0&n=${i}` })
      client.ws.once("close", (code) => watched.closes.push({ at: Date.now(), code }))
    }
    return watched
  })

/** Serves a handler with `drain` options in a scope of its own, closed by the test: the server's release. */
const drainingServer = (drain: NodeChannelServer.DrainOptions | false) =>
  Effect.gen(function*() {
    const disconnects: Array<string> = []
    const handler = ChannelHandler.layer({
      join: (conn) => Effect.succeed(conn.allowJoin()),
      disconnect: (socket) => Effect.sync(() => disconnects.push(socket.connectInfo.params["n"] ?? "?"))
    })
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const context = yield* Layer.buildWithScope(
      HttpServer.serve(HttpRouter.empty).pipe(
        Layer.provideMerge(
          NodeChannelServer.layer(createServer, { port: 0, host: "127.0.0.1" }, { drain, logLevel: false })
        ),
        Layer.provide(handler),
        Layer.provideMerge(ChannelBroadcaster.layerLocal)
      ),
      scope
    ).pipe(Effect.orDie)
    const address = Context.get(context, HttpServer.HttpServer).address
    if (address._tag !== "TcpAddress") return yield* Effect.dieMessage("expected a TCP address")
    const broadcaster = Context.get(context, ChannelBroadcaster.ChannelBroadcaster)
    /** Releases the server; when it started and how long it took. */
    const release = Effect.gen(function*() {
      const start = Date.now()
      yield* Scope.close(scope, Exit.void)
      return { start, millis: Date.now() - start }
    })
    return { url: `ws://127.0.0.1:${address.port}/socket`, disconnects, broadcaster, release }
  })

describe("draining on shutdown (NodeChannelServer)", () => {
  it.scopedLive("the connections are closed (1001) in batches of batchSize, batchInterval apart; disconnect runs for each", () =>
    Effect.gen(function*() {
      const logs = yield* captureLogs
      const server = yield* drainingServer({ batchSize: 2, batchInterval: "600 millis", shutdown: "10 seconds" })
      const clients = yield* watchedClients(server.url, 6)
      yield* eventually(server.broadcaster.connected, (n) => n === 6)
      const { millis, start } = yield* server.release
      const at = clients.closes.map((close) => close.at - start).sort((a, b) => a - b)
      expect(clients.closes.map((close) => close.code)).toEqual([1001, 1001, 1001, 1001, 1001, 1001])
      // Three batches: two closes together, then a pause of about the interval.
      for (const batch of [0, 2, 4]) expect(at[batch + 1]! - at[batch]!).toBeLessThan(300)
      expect(at[2]! - at[1]!).toBeGreaterThan(350)
      expect(at[4]! - at[3]!).toBeGreaterThan(350)
      expect(at[5]!).toBeGreaterThanOrEqual(1150)
      expect(millis).toBeLessThan(10_000)
      expect(server.disconnects.sort()).toEqual(["0", "1", "2", "3", "4", "5"])
      expect(logs.filter((log) => log.message.startsWith("Shutting down")).map((log) => log.message))
        .toEqual(["Shutting down 6 sockets in 3 rounds of 600ms"])
    }), 30_000)

  it.scopedLive("what is still open at the shutdown deadline is closed at once", () =>
    Effect.gen(function*() {
      const server = yield* drainingServer({ batchSize: 1, batchInterval: "1 second", shutdown: "1500 millis" })
      const clients = yield* watchedClients(server.url, 4)
      yield* eventually(server.broadcaster.connected, (n) => n === 4)
      const { millis, start } = yield* server.release
      const at = clients.closes.map((close) => close.at - start).sort((a, b) => a - b)
      expect(at).toHaveLength(4)
      // One batch at once, one a second later, then the deadline closes the last two together.
      expect(at[0]!).toBeLessThan(500)
      expect(at[1]!).toBeGreaterThanOrEqual(950)
      expect(at[2]!).toBeGreaterThanOrEqual(1450)
      expect(at[3]! - at[2]!).toBeLessThan(300)
      expect(at[3]!).toBeLessThan(2000 + 1500)
      expect(millis).toBeLessThan(1500 + 2000 + 1000)
      expect(server.disconnects.sort()).toEqual(["0", "1", "2", "3"])
    }), 30_000)

  it.scopedLive("a batchSize that is not a positive integer fails the server's layer, with the reason", () =>
    Effect.gen(function*() {
      for (const batchSize of [0, -1, 1.5, Number.NaN]) {
        const exit = yield* Effect.exit(Effect.scoped(drainingServer({ batchSize })))
        expect(Exit.isFailure(exit)).toBe(true)
        expect(String(exit._tag === "Failure" ? exit.cause : "")).toContain("drain.batchSize must be a positive integer")
      }
    }))

  it.scopedLive("drain: false closes every connection at once", () =>
    Effect.gen(function*() {
      const server = yield* drainingServer(false)
      const clients = yield* watchedClients(server.url, 4)
      yield* eventually(server.broadcaster.connected, (n) => n === 4)
      const { start } = yield* server.release
      const at = clients.closes.map((close) => close.at - start).sort((a, b) => a - b)
      expect(at).toHaveLength(4)
      expect(at[3]! - at[0]!).toBeLessThan(300)
      expect(server.disconnects).toHaveLength(4)
    }), 30_000)
})
