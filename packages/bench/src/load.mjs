// A load process of the multi-node bench (forked by multinode.mjs, driven over
// IPC). It holds its share of the subscribers, each on the node and loopback
// source address its global index gives, and reports, in wall-clock time
// (`timeOrigin + now()`, comparable between processes on one machine), when
// all of its subscribers have a broadcast and when they have them all.
import { connectClient, protocols } from "./client.mjs"

const now = () => performance.timeOrigin + performance.now()
const clients = []
let protocol
let expected = 0
let counts = []
let delivered = 0
let heartbeats

const onBroadcast = (client, text) => {
  if (!protocol.isBroadcast(text)) return
  const { seq } = protocol.broadcastPayload(text)
  if (seq !== client.next) client.outOfOrder = true
  client.next = seq + 1
  if (++counts[seq] === clients.length) process.send({ cmd: "seq", seq, at: now() })
  if (++delivered === clients.length * expected) process.send({ cmd: "all", at: now() })
}

const commands = {
  // Connects `count` more clients; client `offset + i` goes to `ports[(offset + i) % ports.length]`.
  connect: async ({ protocol: name, ports, count, concurrency, offset }) => {
    protocol = protocols[name]
    if (name === "phoenix" && heartbeats === undefined) {
      // The phoenix client's heartbeat (every 30 s; the server closes a socket silent for 60 s).
      heartbeats = setInterval(() => {
        for (const { ws } of clients) ws.send('[null,"hb","phoenix","heartbeat",{}]')
      }, 25_000)
    }
    const started = performance.now()
    let next = 0
    const worker = async () => {
      while (next < count) {
        const index = offset + next++
        const client = await connectClient(protocol, ports[index % ports.length], index)
        client.next = 0
        client.outOfOrder = false
        client.onMessage = (text) => onBroadcast(client, text)
        clients.push(client)
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
    return { seconds: (performance.now() - started) / 1000 }
  },
  // The next `count` broadcasts carry seq 0 … count - 1.
  expect: ({ count }) => {
    expected = count
    counts = new Array(count).fill(0)
    delivered = 0
    for (const client of clients) {
      client.next = 0
      client.outOfOrder = false
    }
    return {}
  },
  // The subscribers that missed a broadcast or saw them out of order.
  check: () => ({ incomplete: clients.filter((client) => client.outOfOrder || client.next !== expected).length }),
  close: () => {
    clearInterval(heartbeats)
    for (const { ws } of clients) ws.terminate()
    setTimeout(() => process.exit(0), 100)
    return {}
  }
}

process.on("message", async ({ id, cmd, ...args }) => {
  try {
    process.send({ id, ok: true, ...(await commands[cmd](args)) })
  } catch (error) {
    process.send({ id, ok: false, error: String(error?.stack ?? error) })
  }
})
// The bench is gone (finished or failed): go too.
process.on("disconnect", () => process.exit(0))
process.send({ cmd: "ready" })
