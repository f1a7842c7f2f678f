// The load side: one raw `ws` client for all servers, with a thin adapter per
// protocol (Phoenix V2 JSON for effect-channels and bare ws, Engine.IO 4 /
// Socket.IO 5 for Socket.IO). It parses only what a figure needs.
import WebSocket from "ws"

const lobby = "rooms:lobby"

export const protocols = {
  phoenix: {
    url: (port) => `ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0`,
    // Resolves when joined; `ready` is called for every message after that.
    handshake: (ws, onJoined) => {
      ws.once("open", () => ws.send(JSON.stringify(["1", "1", lobby, "phx_join", {}])))
      return (text) => {
        if (text.startsWith('["1","1"')) onJoined()
      }
    },
    push: (ws, event, payload, ref) => ws.send(JSON.stringify(["1", String(ref), lobby, event, payload])),
    // A broadcast, (intercepted by the channel, through `handleOut`) a push with the join ref, or
    // (on a topic with a history) a broadcast with its position as its ref.
    isBroadcast: (text) =>
      text.startsWith('[null,null,"rooms:lobby","new:msg"') || text.startsWith('["1",null,"rooms:lobby","new:msg"') ||
      (text.startsWith('[null,"') && text.includes('","rooms:lobby","new:msg"')),
    broadcastPayload: (text) => JSON.parse(text)[4],
    replyRef: (text) => {
      if (!text.includes('"phx_reply"')) return undefined
      return Number(JSON.parse(text)[1])
    }
  },
  socketio: {
    url: (port) => `ws://127.0.0.1:${port}/socket.io/?EIO=4&transport=websocket`,
    handshake: (ws, onJoined) => (text) => {
      if (text.startsWith("0{")) ws.send("40")
      else if (text.startsWith("40")) ws.send(`421["join","${lobby}",{}]`)
      else if (text.startsWith("431")) onJoined()
    },
    push: (ws, event, payload, ref) =>
      ws.send(ref === undefined ? `42${JSON.stringify([event, payload])}` : `42${ref}${JSON.stringify([event, payload])}`),
    isBroadcast: (text) => text.startsWith('42["new:msg"'),
    broadcastPayload: (text) => JSON.parse(text.slice(2))[1],
    replyRef: (text) => {
      if (!text.startsWith("43")) return undefined
      return Number(text.slice(2, text.indexOf("[")))
    }
  }
}

/**
 * A connected, joined client. `onMessage` receives every text frame after the
 * join; Engine.IO pings are answered here.
 */
export const connectClient = (protocol, port, index) =>
  new Promise((resolve, reject) => {
    const ws = new WebSocket(protocol.url(port), {
      perMessageDeflate: false,
      localAddress: `127.0.0.${1 + (index % 16)}`
    })
    const client = { ws, onMessage: () => {} }
    let joined = false
    const handshake = protocol.handshake(ws, () => {
      joined = true
      resolve(client)
    })
    ws.on("message", (data) => {
      const text = data.toString()
      if (text === "2") return ws.send("3")
      if (joined) client.onMessage(text)
      else handshake(text)
    })
    ws.once("error", reject)
  })

/** Connects `count` clients, `concurrency` at a time; returns them and the joins per second. */
export const connectMany = async (protocol, port, count, concurrency, offset = 0) => {
  const clients = []
  const started = performance.now()
  let next = 0
  const worker = async () => {
    while (next < count) {
      const index = next++
      clients.push(await connectClient(protocol, port, offset + index))
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
  const seconds = (performance.now() - started) / 1000
  return { clients, joinsPerSecond: count / seconds }
}
