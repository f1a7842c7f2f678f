// The multi-node bench: `pnpm bench --nodes N`. Our chat on N nodes sharing
// broadcasts through RedisBroker, against Socket.IO 4 on N nodes with
// @socket.io/redis-adapter, on the same Redis, the same chat and the same load
// client. See ../README.md ("Several nodes") for what each figure is.
import { fork, spawn } from "node:child_process"
import { createServer } from "node:net"
import { mkdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Redis } from "ioredis"
import { connectClient, protocols } from "./client.mjs"

const here = dirname(fileURLToPath(import.meta.url))
const root = join(here, "..", "..", "..")
const redisUrl = process.env.BENCH_REDIS_URL ?? "redis://127.0.0.1:6379"

// One process here may open 20,000 file descriptors (`ulimit -n`): a load
// process holds at most this many clients, well under it.
const clientsPerLoadProcess = 5000

const sizes = {
  full: (nodes) => ({ subscribers: 2000, crowd: nodes === 2 ? 10000 : 10000 * nodes, bursts: 100, singles: 50, probes: 200, warmup: 50, concurrency: 200 }),
  small: (nodes) => ({ subscribers: 50 * nodes, crowd: 300 * nodes, bursts: 20, singles: 10, probes: 20, warmup: 5, concurrency: 50 })
}

const servers = {
  "effect-channels": { entry: join(root, "packages/example-chat/dist/server.mjs"), protocol: "phoenix", env: { CHAT_METRICS: "false" } },
  socketio: { entry: join(here, "servers/socketio.mjs"), protocol: "socketio", env: {} }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const now = () => performance.timeOrigin + performance.now()
const percentile = (values, p) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}
const median = (values) => percentile(values, 50)

// Every process this bench starts, stopped however it ends.
const children = new Set()
const own = (child) => {
  children.add(child)
  child.once("exit", () => children.delete(child))
  return child
}
const killAll = () => {
  for (const child of children) child.kill("SIGKILL")
}
process.once("exit", killAll)
// The prefixes of the runs under way, whose keys an interrupted run still removes.
const prefixes = new Set()
for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) {
  process.once(signal, () => {
    killAll()
    const timeout = sleep(2000)
    Promise.race([Promise.all([...prefixes].map((prefix) => forget(prefix).catch(() => {}))), timeout]).finally(() => process.exit(130))
  })
}

/** A port the kernel just gave and took back (a node takes it next; `startNode` retries if another took it first). */
const freePort = () =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    })
  })

const startNode = async (name, prefix, attempts = 3) => {
  try {
    return await startNodeOnce(name, prefix)
  } catch (error) {
    if (attempts <= 1) throw error
    return startNode(name, prefix, attempts - 1)
  }
}

const startNodeOnce = async (name, prefix) => {
  const port = await freePort()
  const child = own(spawn(process.execPath, [servers[name].entry], {
    env: {
      ...process.env,
      PORT: String(port),
      HOST: "127.0.0.1",
      CHAT_ANNOUNCE_JOINS: "false",
      CHAT_LOG_LEVEL: "false",
      // As the peers, which replay nothing: no history.
      CHAT_HISTORY_SIZE: "0",
      REDIS_URL: redisUrl,
      REDIS_PREFIX: prefix,
      ...servers[name].env
    },
    stdio: ["ignore", "pipe", "inherit"]
  }))
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name} did not listen within 30 s`)), 30_000)
    child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`${name} exited with ${code}`))))
    child.stdout.on("data", (data) => String(data).includes("Listening") && (clearTimeout(timer), resolve()))
  })
  child.removeAllListeners("exit")
  child.once("exit", () => children.delete(child))
  return { child, port }
}

/** Stops a node cleanly (it leaves the cluster), or kills it after 3 s. */
const stop = (child) =>
  new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve()
    const timer = setTimeout(() => child.kill("SIGKILL"), 3000)
    child.once("exit", () => (clearTimeout(timer), resolve()))
    child.kill("SIGTERM")
  })

/** A forked load process, driven by request and reply over IPC. */
const startLoad = async () => {
  const child = own(fork(join(here, "load.mjs"), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] }))
  const pending = new Map()
  const listeners = new Set()
  let nextId = 0
  child.on("message", (message) => {
    if (message.id === undefined) return listeners.forEach((listener) => listener(message))
    const { resolve, reject } = pending.get(message.id)
    pending.delete(message.id)
    message.ok ? resolve(message) : reject(new Error(message.error))
  })
  child.once("exit", (code) => {
    for (const { reject } of pending.values()) reject(new Error(`a load process exited with ${code}`))
  })
  await new Promise((resolve) => listeners.add(function ready(message) {
    if (message.cmd === "ready") listeners.delete(ready), resolve()
  }))
  return {
    child,
    listeners,
    request: (cmd, args = {}) =>
      new Promise((resolve, reject) => {
        const id = nextId++
        pending.set(id, { resolve, reject })
        child.send({ id, cmd, ...args })
      })
  }
}

const cpuMillis = (pid) => {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")
    return (Number(fields[11]) + Number(fields[12])) * 10
  } catch {
    return 0
  }
}
const sum = (values) => values.reduce((a, b) => a + b, 0)

/** CPU of all the nodes and of all the load processes (this one included), in cores, over `phase`. */
const measured = async (nodes, loads, phase) => {
  const cpu = () => ({ server: sum(nodes.map(({ child }) => cpuMillis(child.pid))), load: sum(loads.map(({ child }) => cpuMillis(child.pid))) })
  const before = cpu()
  const self0 = process.cpuUsage()
  const t0 = performance.now()
  const result = await phase()
  const wall = performance.now() - t0
  const after = cpu()
  const self = process.cpuUsage(self0)
  return {
    result,
    cpu: {
      server: (after.server - before.server) / wall,
      load: (after.load - before.load + (self.user + self.system) / 1000) / wall
    }
  }
}

/** Resolves with the latest `at` once every load process has reported `cmd` (and `seq`). */
const reported = (loads, cmd, seq, timeout = 120_000) =>
  new Promise((resolve, reject) => {
    let remaining = loads.length
    let latest = 0
    const timer = setTimeout(() => (cleanup(), reject(new Error(`${remaining} load process(es) short of ${cmd} ${seq ?? ""}`))), timeout)
    const handlers = loads.map((load) => {
      const handler = (message) => {
        if (message.cmd !== cmd || (seq !== undefined && message.seq !== seq)) return
        latest = Math.max(latest, message.at)
        load.listeners.delete(handler)
        if (--remaining === 0) cleanup(), resolve(latest)
      }
      load.listeners.add(handler)
      return [load, handler]
    })
    const cleanup = () => {
      clearTimeout(timer)
      for (const [load, handler] of handlers) load.listeners.delete(handler)
    }
  })

/** Adds `count` subscribers, spread evenly over the load processes and, by global index, over the nodes. */
const grow = async (state, count) => {
  const { loads, ports, protocol, config } = state
  const share = Math.ceil(count / loads.length)
  const started = performance.now()
  await Promise.all(loads.map((load, index) => {
    const n = Math.max(0, Math.min(share, count - index * share))
    const offset = state.connected + index * share
    return n === 0 ? undefined : load.request("connect", {
      protocol,
      ports,
      count: n,
      concurrency: Math.ceil(config.concurrency / loads.length),
      offset
    })
  }))
  state.connected += count
  return count / ((performance.now() - started) / 1000)
}

/** A client of this process on `port` that records when each broadcast's seq arrives. */
const probe = async (protocol, port, index, onArrival) => {
  const client = await connectClient(protocols[protocol], port, index)
  client.arrivals = new Map()
  client.onMessage = (text) => {
    if (!protocols[protocol].isBroadcast(text)) return
    const { seq } = protocols[protocol].broadcastPayload(text)
    client.arrivals.set(seq, performance.now())
    onArrival(seq)
  }
  return client
}

const runServer = async (name, nodeCount, config, runId) => {
  const { protocol } = servers[name]
  const wire = protocols[protocol]
  const prefix = `bench-${runId}-${name}`
  const nodes = []
  const loads = []
  const figures = {}
  const cpu = {}
  let probes = []
  prefixes.add(prefix)
  try {
    for (let i = 0; i < nodeCount; i++) nodes.push(await startNode(name, prefix))
    const ports = nodes.map(({ port }) => port)
    const loadCount = Math.ceil(config.crowd / clientsPerLoadProcess)
    loads.push(...await Promise.all(Array.from({ length: loadCount }, startLoad)))
    await sleep(500)

    // The sender and one probe per node, in this process: the time from a push
    // on node 1 to its arrival on node 1 (local) and on each other node (remote).
    const sender = await connectClient(wire, ports[0], 0)
    let awaited
    const onArrival = (seq) => {
      if (awaited?.seq === seq && probes.every(({ arrivals }) => arrivals.has(seq))) awaited.resolve()
    }
    probes = await Promise.all(ports.map((port, index) => probe(protocol, port, 1 + index, onArrival)))
    await sleep(500)
    // One broadcast, one at a time: its time to each probe, node 1's first.
    const probeOnce = async (seq) => {
      const arrived = new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${name}: broadcast ${seq} did not reach every node`)), 30_000)
        awaited = { seq, resolve: () => (clearTimeout(timer), resolve()) }
      })
      const t0 = performance.now()
      wire.push(sender.ws, "new:msg", { user: "bench", body: "probe", seq })
      await arrived
      return probes.map(({ arrivals }) => arrivals.get(seq) - t0)
    }
    // Fresh processes: the first broadcasts compile the path (and warm Redis's
    // connections); they are not counted.
    for (let seq = -config.warmup; seq < 0; seq++) await probeOnce(seq)
    const crossNode = await measured(nodes, loads, async () => {
      const local = []
      const remote = []
      const added = []
      for (let seq = 0; seq < config.probes; seq++) {
        const [here, ...there] = await probeOnce(seq)
        local.push(here)
        for (const time of there) remote.push(time), added.push(time - here)
      }
      return { local, remote, added }
    })
    figures.localP50 = percentile(crossNode.result.local, 50)
    figures.localP99 = percentile(crossNode.result.local, 99)
    figures.remoteP50 = percentile(crossNode.result.remote, 50)
    figures.remoteP99 = percentile(crossNode.result.remote, 99)
    figures.addedP50 = percentile(crossNode.result.added, 50)
    figures.addedP99 = percentile(crossNode.result.added, 99)
    cpu.crossNode = crossNode.cpu
    for (const client of probes) client.onMessage = () => {}

    // Cross-node fan-out: `subscribers` over the nodes, a burst from node 1.
    const state = { loads, ports, protocol, config, connected: nodeCount + 1 }
    await grow(state, config.subscribers)
    await sleep(1000)
    await Promise.all(loads.map((load) => load.request("expect", { count: config.bursts })))
    const burst = await measured(nodes, loads, async () => {
      const all = reported(loads, "all")
      const t0 = now()
      for (let seq = 0; seq < config.bursts; seq++) wire.push(sender.ws, "new:msg", { user: "bench", body: "burst", seq })
      return (config.subscribers * config.bursts) / ((await all - t0) / 1000)
    })
    figures.fanoutDeliveriesPerSecond = burst.result
    cpu.fanout = burst.cpu
    figures.fanoutIncomplete = sum((await Promise.all(loads.map((load) => load.request("check")))).map(({ incomplete }) => incomplete))

    // Broadcast-to-all at the crowd's size: the time until the last subscriber on any node has it.
    const joined = await measured(nodes, loads, () => grow(state, config.crowd - config.subscribers))
    figures.joinsPerSecond = joined.result
    cpu.joins = joined.cpu
    await sleep(2000)
    await Promise.all(loads.map((load) => load.request("expect", { count: config.singles })))
    const crowd = await measured(nodes, loads, async () => {
      const times = []
      for (let seq = 0; seq < config.singles; seq++) {
        const done = reported(loads, "seq", seq)
        const t0 = now()
        wire.push(sender.ws, "new:msg", { user: "bench", body: "single", seq })
        times.push(await done - t0)
      }
      return times
    })
    figures.crowdP50 = percentile(crowd.result, 50)
    figures.crowdP99 = percentile(crowd.result, 99)
    cpu.crowd = crowd.cpu
    figures.crowdIncomplete = sum((await Promise.all(loads.map((load) => load.request("check")))).map(({ incomplete }) => incomplete))
    sender.ws.terminate()
    return { figures, cpu }
  } finally {
    for (const client of probes) client.ws.terminate()
    await Promise.all(loads.map((load) => load.request("close").catch(() => {})))
    await Promise.all(loads.map(({ child }) => stop(child)))
    await Promise.all(nodes.map(({ child }) => stop(child)))
    // A failure to clean up must not hide the run's own error.
    await forget(prefix).catch((error) => process.stderr.write(`could not remove the keys under ${prefix}: ${error.message}\n`))
    prefixes.delete(prefix)
    await sleep(500)
  }
}

/** Removes what a run left in Redis under its prefix (our nodes' heartbeat keys, if killed). */
const forget = async (prefix) => {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, retryStrategy: () => null })
  redis.on("error", () => {})
  try {
    await redis.connect()
    let cursor = "0"
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000)
      cursor = next
      if (keys.length > 0) await redis.del(...keys)
    } while (cursor !== "0")
  } finally {
    redis.disconnect()
  }
}

export const main = async ({ nodes, size, runs, only }) => {
  if (!Number.isInteger(nodes) || nodes < 2) throw new Error(`--nodes must be 2 or more, got ${nodes}`)
  const config = sizes[size](nodes)
  const names = Object.keys(servers).filter((name) => only.includes(name))
  const runId = `${Date.now().toString(36)}-${process.pid}`
  const all = Object.fromEntries(names.map((name) => [name, []]))
  const loadAverages = []
  for (let run = 1; run <= runs; run++) {
    for (const name of names) {
      process.stderr.write(`run ${run}/${runs}: ${name} on ${nodes} nodes… (load average ${os.loadavg().map((l) => l.toFixed(2)).join(" ")})\n`)
      loadAverages.push(os.loadavg())
      all[name].push(await runServer(name, nodes, config, `${runId}-${run}`))
    }
  }
  loadAverages.push(os.loadavg())
  const rows = [
    ["fanoutDeliveriesPerSecond", `cross-node fan-out: deliveries/s, ${config.bursts} broadcasts to ${config.subscribers} over ${nodes} nodes`, "higher", 0],
    ["crowdP50", `broadcast-to-all p50 ms, ${config.crowd} subscribers over ${nodes} nodes`, "lower", 2],
    ["crowdP99", `broadcast-to-all p99 ms, ${config.crowd} subscribers over ${nodes} nodes`, "lower", 2],
    ["localP50", "push → same-node subscriber p50 ms", "lower", 3],
    ["localP99", "push → same-node subscriber p99 ms", "lower", 3],
    ["remoteP50", "push → other-node subscriber p50 ms", "lower", 3],
    ["remoteP99", "push → other-node subscriber p99 ms", "lower", 3],
    ["addedP50", "added by crossing nodes p50 ms (other − same, per broadcast)", "lower", 3],
    ["addedP99", "added by crossing nodes p99 ms", "lower", 3],
    ["joinsPerSecond", `joins/s, growing to ${config.crowd}`, "higher", 0],
    ["fanoutIncomplete", "fan-out subscribers that missed one or saw them out of order", "lower", 0],
    ["crowdIncomplete", `of the ${config.crowd}, subscribers that missed one or saw them out of order`, "lower", 0]
  ]
  const medians = Object.fromEntries(names.map((name) => [
    name,
    Object.fromEntries(rows.map(([key]) => [key, median(all[name].map((r) => r.figures[key]))]))
  ]))
  const info = {
    date: new Date().toISOString(),
    node: process.version,
    cpus: `${os.cpus().length} × ${os.cpus()[0]?.model}`,
    memory: `${Math.round(os.totalmem() / 2 ** 30)} GiB`,
    size,
    runs,
    nodes,
    redis: redisUrl,
    loadProcesses: Math.ceil(config.crowd / clientsPerLoadProcess),
    loadAverages
  }
  const ours = "effect-channels"
  const peers = names.includes(ours) ? names.filter((name) => name !== ours) : []
  const ratio = (name, key) => (medians[name][key] === 0 ? "–" : `${(medians[ours][key] / medians[name][key]).toFixed(2)}×`)
  const header = ["figure", ...names, ...peers.map((name) => `ours / ${name}`)]
  const lines = [
    `${info.date} · Node ${info.node} · ${info.cpus} · ${info.memory} · ${nodes} nodes on Redis ${redisUrl} · size ${size} · median of ${runs} run(s)`,
    `load average (1, 5, 15 min) at each server's start and at the end: ${loadAverages.map((l) => l.map((v) => v.toFixed(2)).join(" ")).join(" · ")}`,
    "",
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...rows.map(([key, label, , digits]) =>
      `| ${label} | ${[...names.map((name) => medians[name][key].toFixed(digits)), ...peers.map((name) => ratio(name, key))].join(" | ")} |`)
  ]
  const cpuLines = names.map((name) => {
    const parts = Object.entries(all[name][0].cpu).map(([phase, { load, server }]) => `${phase} nodes ${(server * 100).toFixed(0)}% / load ${(load * 100).toFixed(0)}%`)
    return `- ${name}: ${parts.join(", ")}`
  })
  console.log([...lines, "", `CPU, as a share of one core over each phase, all ${nodes} nodes together and all ${info.loadProcesses + 1} load processes together (first run):`, ...cpuLines].join("\n"))
  mkdirSync(join(here, "..", "results"), { recursive: true })
  const raw = JSON.stringify({ info, config, medians, runs: all }, null, 2)
  writeFileSync(join(here, "..", "results", `latest-nodes-${nodes}.json`), raw)
  writeFileSync(join(here, "..", "results", `${info.date.replace(/[:.]/g, "-")}-nodes-${nodes}.json`), raw)
}
