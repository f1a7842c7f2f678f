// effect-channels side by side with Socket.IO and bare ws, in one run.
//
//   pnpm bench [--size small|full] [--runs N] [--only effect-channels,socketio,ws]
//   pnpm bench --only effect-channels,effect-channels+metrics,effect-channels+otel   (the cost of metrics and traces)
//   pnpm bench --only effect-channels,effect-channels+intercept   (an intercepted event against the fastlane)
//   pnpm bench --before <server.mjs> --only effect-channels@before,effect-channels,ws   (a change's before and after)
//   pnpm bench --nodes 2|3 [--size small|full] [--runs N]   (several nodes on Redis, against Socket.IO's Redis adapter)
//
// Each server runs in its own process and is driven from this one; see
// ../README.md for what each figure means.
import { spawn } from "node:child_process"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath, pathToFileURL } from "node:url"
import WebSocket from "ws"
import { connectClient, connectMany, protocols } from "./client.mjs"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..", "..")

const argument = (name, fallback) => {
  const index = process.argv.indexOf(`--${name}`)
  return index === -1 ? fallback : process.argv[index + 1]
}
const size = argument("size", "full")
const runs = Number(argument("runs", "1"))
const only = argument("only", "effect-channels,socketio,ws").split(",")
// `--nodes N`: the multi-node bench over Redis (./multinode.mjs) instead.
const nodes = argument("nodes", undefined)

const sizes = {
  full: { subscribers: 2000, crowd: 10000, bursts: 100, singles: 50, rttClients: 100, rttSeconds: 5, concurrency: 200 },
  small: { subscribers: 50, crowd: 500, bursts: 20, singles: 10, rttClients: 10, rttSeconds: 1, concurrency: 50 }
}
const config = sizes[size]

const chat = join(root, "packages/example-chat/dist/server.mjs")
// effect-channels with metrics off (the figures compared with the peers), and
// the variants that measure what metrics and traces cost: metrics on and
// exported through OpenTelemetry (`GET /metrics`), then also an OpenTelemetry
// tracer that makes every span and discards it (no exporter's cost).
const servers = {
  "effect-channels": { entry: chat, protocol: protocols.phoenix, env: { CHAT_METRICS: "false", CHAT_HISTORY_SIZE: "0" } },
  // The lobby with a history of 100 (missed-message recovery): the cost of positions against the
  // plain topic above, and the time a client that missed 100 broadcasts takes to get them.
  "effect-channels+history": {
    entry: chat,
    protocol: protocols.phoenix,
    env: { CHAT_METRICS: "false", CHAT_HISTORY_SIZE: "100" },
    recovers: true
  },
  "effect-channels+metrics": { entry: chat, protocol: protocols.phoenix, env: { CHAT_METRICS: "true", CHAT_HISTORY_SIZE: "0" } },
  "effect-channels+otel": {
    entry: chat,
    protocol: protocols.phoenix,
    env: { CHAT_METRICS: "true", CHAT_HISTORY_SIZE: "0", CHAT_TRACES: "discard" }
  },
  // `new:msg` intercepted (handleOut passes it on unchanged): encoded per subscriber, not once.
  "effect-channels+intercept": {
    entry: chat,
    protocol: protocols.phoenix,
    env: { CHAT_METRICS: "false", CHAT_HISTORY_SIZE: "0", CHAT_INTERCEPT: "true" }
  },
  socketio: { entry: join(here, "servers/socketio.mjs"), protocol: protocols.socketio },
  ws: { entry: join(here, "servers/bare-ws.mjs"), protocol: protocols.phoenix }
}
// An earlier build of the chat (another commit's `pnpm --filter @effect-channels/example-chat build`),
// run in the same run as this one: a change's figures before and after, side by side.
const before = argument("before", undefined)
if (before !== undefined) {
  servers["effect-channels@before"] = { entry: resolve(before), protocol: protocols.phoenix, env: { CHAT_METRICS: "false" } }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}
const median = (values) => percentile(values, 50)

const start = async (name) => {
  const port = 20000 + Math.floor(Math.random() * 20000)
  const child = spawn(process.execPath, ["--expose-gc", "--import", heapProbe, servers[name].entry], {
    env: { ...process.env, PORT: String(port), HOST: "127.0.0.1", CHAT_ANNOUNCE_JOINS: "false", CHAT_LOG_LEVEL: "false", REDIS_URL: "", ...servers[name].env },
    stdio: ["ignore", "pipe", "inherit", "ipc"]
  })
  await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`${name} exited with ${code}`)))
    child.stdout.on("data", (data) => String(data).includes("Listening") && resolve())
  })
  child.removeAllListeners("exit")
  return { child, port }
}

const heapProbe = pathToFileURL(join(here, "heap-probe.mjs")).href
/** The server's live heap, after a full collection (./heap-probe.mjs). */
const liveHeap = (child) =>
  new Promise((resolve) => {
    child.once("message", (message) => resolve(message.heapUsed))
    child.send("heap?")
  })

const rss = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))[1]) * 1024
const cpuMillis = (pid) => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
  // utime and stime, in clock ticks of 10 ms (USER_HZ is 100 on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10
}

/** CPU used by the server and by this load process during `phase`, as a share of its wall time. */
const measured = async (pid, phase) => {
  const server0 = cpuMillis(pid)
  const load0 = process.cpuUsage()
  const t0 = performance.now()
  const result = await phase()
  const wall = performance.now() - t0
  const load = process.cpuUsage(load0)
  return {
    result,
    cpu: {
      server: (cpuMillis(pid) - server0) / wall,
      load: (load.user + load.system) / 1000 / wall
    }
  }
}

/** Waits until every client has received `count` broadcasts since `reset`. */
const deliveries = (clients, protocol) => {
  let total = 0
  let waiting
  for (const client of clients) {
    client.onMessage = (text) => {
      if (!protocol.isBroadcast(text)) return
      client.seen.push(protocol.broadcastPayload(text).seq)
      total++
      if (waiting !== undefined && total >= waiting.target) waiting.resolve()
    }
    client.seen = []
  }
  return {
    reset: () => {
      total = 0
      for (const client of clients) client.seen = []
    },
    until: (target, timeout = 60_000) =>
      total >= target ? Promise.resolve() : new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${total} of ${target} deliveries`)), timeout)
        waiting = { target, resolve: () => (clearTimeout(timer), waiting = undefined, resolve()) }
      })
  }
}

const broadcastLatency = async (protocol, sender, listeners, count) => {
  const times = []
  for (let i = 0; i < count; i++) {
    listeners.reset()
    const t0 = performance.now()
    protocol.push(sender.ws, "new:msg", { user: "bench", body: "single", seq: i })
    await listeners.until(listeners.size)
    times.push(performance.now() - t0)
  }
  return { p50: percentile(times, 50), p99: percentile(times, 99) }
}

const roundTrips = async (protocol, clients, seconds) => {
  const times = []
  const deadline = performance.now() + seconds * 1000
  await Promise.all(clients.map((client, index) =>
    new Promise((resolve) => {
      let ref = 1000 + index * 1_000_000
      let sentAt = 0
      const next = () => {
        if (performance.now() > deadline) return resolve()
        sentAt = performance.now()
        protocol.push(client.ws, "ping", { t: ref }, ++ref)
      }
      client.onMessage = (text) => {
        if (protocol.replyRef(text) !== ref) return
        times.push(performance.now() - sentAt)
        next()
      }
      next()
    })
  ))
  return { p50: percentile(times, 50), p99: percentile(times, 99), count: times.length }
}

/**
 * A client that saw `position` and then missed `count` broadcasts rejoins with
 * it: the time from its join to the last of them, and whether it had each
 * exactly once, in order.
 */
const recovery = async (protocol, port, sender, count) => {
  const first = await connectClient(protocol, port, 1)
  const position = await new Promise((resolve) => {
    first.ws.send(JSON.stringify(["2", "2", "rooms:lobby", "phx_join", {}]))
    first.onMessage = (text) => text.startsWith('["2","2"') && resolve(JSON.parse(text)[4].response._position)
  })
  first.ws.terminate()
  for (let seq = 0; seq < count; seq++) protocol.push(sender.ws, "new:msg", { user: "bench", body: "missed", seq })
  // Until the sender has its own last one: every broadcast is in the history.
  await new Promise((resolve) => {
    sender.onMessage = (text) => protocol.isBroadcast(text) && protocol.broadcastPayload(text).seq === count - 1 && resolve()
  })
  const ws = new WebSocket(protocol.url(port), { perMessageDeflate: false })
  await new Promise((resolve) => ws.once("open", resolve))
  const seen = []
  const t0 = performance.now()
  let recovered
  await new Promise((resolve) => {
    ws.on("message", (data) => {
      const text = data.toString()
      if (text.startsWith('["3","3"')) recovered = JSON.parse(text)[4].response._recovered
      else if (protocol.isBroadcast(text)) {
        seen.push(protocol.broadcastPayload(text).seq)
        if (seen.length === count) resolve()
      }
    })
    ws.send(JSON.stringify(["3", "3", "rooms:lobby", "phx_join", { _position: position }]))
  })
  const millis = performance.now() - t0
  ws.terminate()
  const inOrder = recovered === true && seen.join() === Array.from({ length: count }, (_, i) => i).join()
  return { millis, inOrder }
}

const runServer = async (name, config = sizes[size]) => {
  const { protocol } = servers[name]
  const { child, port } = await start(name)
  const { pid } = child
  const figures = {}
  const cpu = {}
  try {
    await sleep(500)
    const idle = rss(pid)
    const idleHeap = await liveHeap(child)
    // Joins per second and memory per idle joined connection, with the crowd.
    const joined = await measured(pid, () => connectMany(protocol, port, config.crowd, config.concurrency))
    const crowd = joined.result.clients
    figures.joinsPerSecond = joined.result.joinsPerSecond
    cpu.joins = joined.cpu
    await sleep(2000)
    figures.memoryPerConnectionKB = (rss(pid) - idle) / config.crowd / 1024
    figures.heapPerConnectionKB = (await liveHeap(child) - idleHeap) / config.crowd / 1024

    // Broadcast-to-all time at the crowd's size.
    const [sender, ...rest] = crowd
    let listeners = Object.assign(deliveries(rest, protocol), { size: rest.length })
    const crowdLatency = await measured(pid, () => broadcastLatency(protocol, sender, listeners, config.singles))
    figures.broadcastCrowdP50 = crowdLatency.result.p50
    figures.broadcastCrowdP99 = crowdLatency.result.p99
    cpu.broadcastCrowd = crowdLatency.cpu

    // Down to `subscribers`: broadcast-to-all time, then a burst.
    // Closing 8,000 connections is work for every server: let it settle.
    for (const client of rest.splice(config.subscribers)) client.ws.terminate()
    await sleep(3000)
    listeners = Object.assign(deliveries(rest, protocol), { size: rest.length })
    const latency = await measured(pid, () => broadcastLatency(protocol, sender, listeners, config.singles))
    figures.broadcastP50 = latency.result.p50
    figures.broadcastP99 = latency.result.p99
    cpu.broadcast = latency.cpu

    listeners.reset()
    const burst = await measured(pid, async () => {
      const t0 = performance.now()
      for (let seq = 0; seq < config.bursts; seq++) protocol.push(sender.ws, "new:msg", { user: "bench", body: "burst", seq })
      await listeners.until(rest.length * config.bursts)
      return (rest.length * config.bursts) / ((performance.now() - t0) / 1000)
    })
    figures.fanoutDeliveriesPerSecond = burst.result
    cpu.fanout = burst.cpu
    const expected = Array.from({ length: config.bursts }, (_, i) => i)
    figures.fanoutOutOfOrder = rest.filter(({ seen }) => seen.join() !== expected.join()).length

    // Push → reply round trips.
    const rtt = await measured(pid, () => roundTrips(protocol, rest.slice(0, config.rttClients), config.rttSeconds))
    figures.rttP50 = rtt.result.p50
    figures.rttP99 = rtt.result.p99
    cpu.rtt = rtt.cpu
    if (servers[name].recovers) {
      const recovered = await recovery(protocol, port, sender, 100)
      figures.recover100Millis = recovered.millis
      figures.recoveredInOrder = recovered.inOrder ? 1 : 0
    }
    for (const client of [sender, ...rest]) client.ws.terminate()
    return { figures, cpu }
  } finally {
    child.kill("SIGKILL")
    await sleep(500)
  }
}

const rows = [
  ["fanoutDeliveriesPerSecond", `fan-out: deliveries/s, ${config.bursts} broadcasts to ${config.subscribers}`, "higher", 0],
  ["broadcastP50", `broadcast-to-all p50 ms, ${config.subscribers} subscribers`, "lower", 2],
  ["broadcastP99", `broadcast-to-all p99 ms, ${config.subscribers} subscribers`, "lower", 2],
  ["broadcastCrowdP50", `broadcast-to-all p50 ms, ${config.crowd} subscribers`, "lower", 2],
  ["broadcastCrowdP99", `broadcast-to-all p99 ms, ${config.crowd} subscribers`, "lower", 2],
  ["memoryPerConnectionKB", `memory per idle joined connection KB, ${config.crowd} connections`, "lower", 1],
  ["heapPerConnectionKB", "of which live heap KB (after a full collection)", "lower", 2],
  ["joinsPerSecond", `joins/s, connecting ${config.crowd}`, "higher", 0],
  ["rttP50", `push → reply p50 ms, ${config.rttClients} clients`, "lower", 3],
  ["rttP99", `push → reply p99 ms, ${config.rttClients} clients`, "lower", 3],
  ["fanoutOutOfOrder", "subscribers that saw the burst out of order or incomplete", "lower", 0],
  ["recover100Millis", "recovery: ms from a rejoin to the last of 100 missed broadcasts", "lower", 1],
  ["recoveredInOrder", "recovery: the 100 replayed once, in order (1 = yes)", "higher", 0]
]

const main = async () => {
  const names = Object.keys(servers).filter((name) => only.includes(name))
  const all = Object.fromEntries(names.map((name) => [name, []]))
  // A first, unmeasured pass at the small size warms this load process (its
  // JIT) and the machine, so that no server pays for being first.
  process.stderr.write(`warm-up: ${names[0]}…\n`)
  await runServer(names[0], sizes.small)
  for (let run = 1; run <= runs; run++) {
    // Each run starts with the next server: none is always first, or always
    // right after a given one.
    const order = names.map((_, index) => names[(index + run - 1) % names.length])
    for (const name of order) {
      // The previous server's clients are garbage here: collected now, not
      // during this server's figures.
      globalThis.gc?.()
      process.stderr.write(`run ${run}/${runs}: ${name}…\n`)
      all[name].push(await runServer(name))
    }
  }
  const medians = Object.fromEntries(names.map((name) => [
    name,
    Object.fromEntries(rows.map(([key]) => {
      const values = all[name].map((r) => r.figures[key]).filter((value) => value !== undefined)
      return [key, values.length === 0 ? undefined : median(values)]
    }))
  ]))
  const info = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    size,
    runs
  }
  const ours = "effect-channels"
  const ratioNames = names.includes(ours) ? names.filter((name) => name !== ours) : []
  // A variant of ours is compared with ours; ours is compared with a peer.
  const isVariant = (name) => name.startsWith(`${ours}+`)
  const ratio = (name, key) => {
    const [top, bottom] = isVariant(name) ? [medians[name][key], medians[ours][key]] : [medians[ours][key], medians[name][key]]
    return bottom === 0 || top === undefined || bottom === undefined ? "–" : `${(top / bottom).toFixed(2)}×`
  }
  const header = ["figure", ...names, ...ratioNames.map((name) => isVariant(name) ? `${name} / ours` : `ours / ${name}`)]
  const lines = [
    `${info.date} · Node ${info.node} · ${info.cpus} · ${info.memory} · size ${size} · median of ${runs} run(s)`,
    "",
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map(([key, label, , digits]) => {
      const values = names.map((name) => medians[name][key]?.toFixed(digits) ?? "–")
      const ratios = ratioNames.map((name) => ratio(name, key))
      return `| ${label} | ${[...values, ...ratios].join(" | ")} |`
    })
  ]
  const cpuLines = names.map((name) => {
    const cpu = all[name][0].cpu
    const parts = Object.entries(cpu).map(([phase, { load, server }]) => `${phase} server ${(server * 100).toFixed(0)}% / load ${(load * 100).toFixed(0)}%`)
    return `- ${name}: ${parts.join(", ")}`
  })
  console.log([...lines, "", "CPU, as a share of one core over each phase (first run):", ...cpuLines].join("\n"))
  mkdirSync(join(here, "..", "results"), { recursive: true })
  const raw = JSON.stringify({ info, config, medians, runs: all }, null, 2)
  writeFileSync(join(here, "..", "results", "latest.json"), raw)
  writeFileSync(join(here, "..", "results", `${info.date.replace(/[:.]/g, "-")}.json`), raw)
}

const bench = nodes === undefined
  ? main
  : () => import("./multinode.mjs").then((multinode) => multinode.main({ nodes: Number(nodes), size, runs, only }))
bench().catch((error) => {
  console.error(error)
  process.exit(1)
})
