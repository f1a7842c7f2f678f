import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import * as ChatServer from "./ChatServer.js"

const port = Number(process.env["PORT"] ?? 4000)
const host = process.env["HOST"] ?? "127.0.0.1"
const announceJoins = process.env["CHAT_ANNOUNCE_JOINS"] !== "false"
// With REDIS_URL, this node joins the others on that Redis (one chat across processes).
const redisUrl = process.env["REDIS_URL"] || undefined

ChatServer.layer({ host, port, announceJoins, redisUrl }).pipe(Layer.launch, NodeRuntime.runMain)
