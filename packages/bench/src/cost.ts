// What metrics and spans cost the runtime, in CPU time per operation, in one
// process: the socket's connections run over an in-memory transport (no
// network, no load process), so that the figure is the server's own work and
// a shared machine's load changes it less than it changes wall-clock times.
//
//   pnpm --filter @effect-channels/bench cost [--rounds 15]
//
// Three sockets, each with its broker: metrics off, metrics on (no tracer),
// and metrics on with spans (a tracer that is Effect's own, installed as an
// application's would be: the cost of making the spans, not of exporting
// them). Rounds alternate between them; each figure is the median of the
// rounds' CPU time (user + system) per operation.
import { ChannelBroadcaster, ChannelHandler, ChannelMetrics, ChannelSocket } from "@effect-channels/core"
import type { Listener, Opened } from "@effect-channels/core/Transport"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Tracer from "effect/Tracer"

const argument = (name: string, fallback: string) => {
  const index = process.argv.indexOf(`--${name}`)
  return index === -1 ? fallback : process.argv[index + 1]!
}
const rounds = Number(argument("rounds", "15"))
const subscribers = 2000
const bursts = 1000
const roundTrips = 20000

const Lobby = ChannelHandler.layer({
  join: (conn) => Effect.succeed(conn.allowJoin()),
  incoming: (conn, event) =>
    event.event === "ping" ? conn.reply(event, "ok", event.payload) : conn.broadcast(event.event, event.payload)
})

/** A connection's client: counts the frames written to it, and calls `onFrame` when one is. */
interface Client {
  listener: Listener | undefined
  frames: number
  onFrame: (() => void) | undefined
}

const request: ChannelSocket.ConnectRequest = {
  transport: "websocket",
  url: "/socket/websocket?vsn=2.0.0",
  headers: {},
  remoteAddress: Option.none(),
  authToken: Option.none()
}

const opened = (client: Client): Opened => {
  const written = (count: number) => {
    client.frames += count
    client.onFrame?.()
  }
  return {
    transport: {
      send: () => written(1),
      sendAll: (frames) => written(frames.length),
      bufferedAmount: () => 0,
      close: () => client.listener?.onClose(),
      abort: () => client.listener?.onClose()
    },
    listen: (listener) => Effect.sync(() => {
      client.listener = listener
    })
  }
}

/** Waits until `done` holds, checked after each frame written to `client`. */
const until = (client: Client, done: () => boolean) =>
  new Promise<void>((resolve) => {
    if (done()) return resolve()
    client.onFrame = () => {
      if (!done()) return
      client.onFrame = undefined
      resolve()
    }
  })

/** A socket with `subscribers` joined clients, the first of which pushes. */
const server = Effect.gen(function*() {
  const socket = yield* ChannelSocket.make()
  const clients: Array<Client> = []
  for (let i = 0; i < subscribers; i++) {
    const client: Client = { listener: undefined, frames: 0, onFrame: undefined }
    const scope = yield* Scope.make()
    const accepted = yield* socket.accept(request, () => Effect.succeed(opened(client)), scope)
    yield* Effect.forkDaemon(accepted.run)
    client.listener!.onFrame(JSON.stringify(["1", "1", "rooms:lobby", "phx_join", {}]))
    clients.push(client)
  }
  yield* Effect.promise(() => until(clients.at(-1)!, () => clients.at(-1)!.frames === 1))
  return clients
})

const cpuMicros = () => {
  const { system, user } = process.cpuUsage()
  return user + system
}

/** CPU µs per delivery of a burst of broadcasts to every subscriber. */
const fanout = async (clients: ReadonlyArray<Client>) => {
  const [sender] = clients
  const last = clients.at(-1)!
  const target = last.frames + bursts
  const t0 = cpuMicros()
  for (let seq = 0; seq < bursts; seq++) {
    sender!.listener!.onFrame(JSON.stringify(["1", String(seq + 10), "rooms:lobby", "new:msg", { body: "burst", seq }]))
  }
  // The broker writes to subscribers in order: the last has them all last.
  await until(last, () => last.frames >= target)
  return (cpuMicros() - t0) / (bursts * clients.length)
}

/** CPU µs per push → reply, one after the other on one connection. */
const roundTrip = async (clients: ReadonlyArray<Client>) => {
  const client = clients[1]!
  const t0 = cpuMicros()
  for (let i = 0; i < roundTrips; i++) {
    const target = client.frames + 1
    client.listener!.onFrame(JSON.stringify(["1", String(i + 1000), "rooms:lobby", "ping", { t: i }]))
    await until(client, () => client.frames >= target)
  }
  return (cpuMicros() - t0) / roundTrips
}

const native = Effect.runSync(Effect.tracer)
// Effect's own spans, through a tracer the socket cannot tell from an application's.
const tracer = Tracer.make({ span: (...args) => native.span(...args), context: (f) => f() })

const variants = {
  "metrics off": Layer.succeed(ChannelMetrics.MetricsEnabled, false),
  "metrics on": Layer.empty,
  "metrics on, spans": Layer.setTracer(tracer)
} as const

type Name = keyof typeof variants

const median = (values: ReadonlyArray<number>) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!

const main = Effect.gen(function*() {
  const built: Array<{ readonly name: Name; readonly clients: ReadonlyArray<Client> }> = []
  for (const name of Object.keys(variants) as Array<Name>) {
    // Built for the whole run: the broker lives as long as the main scope.
    const context = yield* Layer.build(
      Layer.provideMerge(Lobby.pipe(Layer.provideMerge(ChannelBroadcaster.layerLocal)), variants[name])
    )
    const clients = yield* Effect.provide(server, context)
    built.push({ name, clients })
  }
  const figures = Object.fromEntries(built.map(({ name }) => [name, { fanout: [] as Array<number>, rtt: [] as Array<number> }]))
  for (let round = 0; round < rounds + 1; round++) {
    for (const { clients, name } of built) {
      const f = yield* Effect.promise(() => fanout(clients))
      const r = yield* Effect.promise(() => roundTrip(clients))
      // The first round warms the JIT up.
      if (round > 0) {
        figures[name]!.fanout.push(f)
        figures[name]!.rtt.push(r)
      }
    }
  }
  const off = figures["metrics off"]!
  console.log(`${subscribers} subscribers, ${bursts} broadcasts a burst, ${roundTrips} round trips a round; median of ${rounds} rounds`)
  console.log("| variant | fan-out CPU µs/delivery | vs off | push → reply CPU µs | vs off |")
  console.log("| --- | --- | --- | --- | --- |")
  for (const { name } of built) {
    const { fanout: f, rtt: r } = figures[name]!
    console.log(
      `| ${name} | ${median(f).toFixed(3)} | ${(median(f) / median(off.fanout)).toFixed(3)}× | ${median(r).toFixed(2)} | ${
        (median(r) / median(off.rtt)).toFixed(3)
      }× |`
    )
  }
})

Effect.runPromise(Effect.scoped(main)).then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
