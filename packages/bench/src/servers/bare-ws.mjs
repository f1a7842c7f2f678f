// The floor: the chat over bare `ws`, speaking Phoenix V2 JSON. One JSON
// encode per broadcast, written to a Set of sockets.
import http from "node:http"
import { WebSocketServer } from "ws"

const lobby = "rooms:lobby"
const announceJoins = process.env.CHAT_ANNOUNCE_JOINS !== "false"
const members = new Set()

const broadcast = (event, payload) => {
  const frame = JSON.stringify([null, null, lobby, event, payload])
  for (const ws of members) ws.send(frame)
}
const reply = (ws, [joinRef, ref, topic], status, response) =>
  ws.send(JSON.stringify([joinRef, ref, topic, "phx_reply", { status, response }]))

const server = http.createServer((req, res) => {
  if (req.method !== "PUT" || req.url !== "/broadcast") return res.writeHead(404).end()
  let body = ""
  req.on("data", (chunk) => (body += chunk))
  req.on("end", () => {
    broadcast("new:msg", JSON.parse(body))
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ connected: wss.clients.size }))
  })
})
const wss = new WebSocketServer({ server, path: "/socket/websocket", perMessageDeflate: false })
wss.on("connection", (ws) => {
  ws.on("message", (data) => {
    const message = JSON.parse(String(data))
    const [, , topic, event, payload] = message
    if (topic === "phoenix" && event === "heartbeat") return reply(ws, message, "ok", {})
    if (event === "phx_join") {
      if (topic !== lobby) return reply(ws, message, "error", { reason: "unauthorized" })
      reply(ws, message, "ok", {})
      members.add(ws)
      if (announceJoins) broadcast("user:entered", { user: payload?.user ?? null })
    } else if (event === "new:msg") broadcast("new:msg", payload)
    else if (event === "ping") reply(ws, message, "ok", payload)
  })
  ws.on("close", () => members.delete(ws))
})
server.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1", () => console.log("Listening"))
