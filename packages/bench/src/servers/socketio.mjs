// The chat over Socket.IO 4: rooms, the websocket transport, no compression.
// With REDIS_URL, the node joins the others through `@socket.io/redis-adapter`
// on ioredis, as the adapter documents, its channels under REDIS_PREFIX.
import http from "node:http"
import { Server } from "socket.io"

const lobby = "rooms:lobby"
const announceJoins = process.env.CHAT_ANNOUNCE_JOINS !== "false"

const server = http.createServer((req, res) => {
  if (req.method !== "PUT" || req.url !== "/broadcast") return
  let body = ""
  req.on("data", (chunk) => (body += chunk))
  req.on("end", () => {
    io.to(lobby).emit("new:msg", JSON.parse(body))
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ connected: io.engine.clientsCount }))
  })
})
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, httpCompression: false })
io.on("connection", (socket) => {
  socket.on("join", (room, payload, ack) => {
    if (room !== lobby) return ack({ status: "error", response: { reason: "unauthorized" } })
    socket.join(lobby)
    ack({ status: "ok", response: {} })
    if (announceJoins) io.to(lobby).emit("user:entered", { user: payload?.user ?? null })
  })
  socket.on("new:msg", (payload) => io.to(lobby).emit("new:msg", payload))
  socket.on("ping", (payload, ack) => ack({ status: "ok", response: payload }))
})
if (process.env.REDIS_URL) {
  const [{ createAdapter }, { Redis }] = await Promise.all([import("@socket.io/redis-adapter"), import("ioredis")])
  const pubClient = new Redis(process.env.REDIS_URL)
  const subClient = pubClient.duplicate()
  await Promise.all([pubClient, subClient].map((client) => new Promise((resolve) => client.once("ready", resolve))))
  io.adapter(createAdapter(pubClient, subClient, { key: process.env.REDIS_PREFIX ?? "socket.io" }))
}
server.listen(Number(process.env.PORT), process.env.HOST ?? "127.0.0.1", () => console.log("Listening"))
