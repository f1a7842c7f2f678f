import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import * as ChatServer from "./ChatServer.js"

const port = Number(process.env["PORT"] ?? 4000)
const host = process.env["HOST"] ?? "127.0.0.1"
const announceJoins = process.env["CHAT_ANNOUNCE_JOINS"] !== "false"
// The socket's connect and join logs (Phoenix's, at Info by default): "false" turns them off.
const logLevel = process.env["CHAT_LOG_LEVEL"] === "false" ? false : undefined

ChatServer.layer({ host, port, announceJoins, logLevel }).pipe(Layer.launch, NodeRuntime.runMain)
