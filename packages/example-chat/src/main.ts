import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import * as ChatServer from "./ChatServer.js"

const port = Number(process.env["PORT"] ?? 4000)
const host = process.env["HOST"] ?? "127.0.0.1"
const announceJoins = process.env["CHAT_ANNOUNCE_JOINS"] !== "false"
// CHAT_LOG_CONNECTS=false: no connect log (the benchmark's servers log nothing either).
const logLevel = process.env["CHAT_LOG_CONNECTS"] === "false" ? false : "Info"

ChatServer.layer({ host, port, announceJoins, logLevel }).pipe(Layer.launch, NodeRuntime.runMain)
