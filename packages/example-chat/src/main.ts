import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import * as ChatServer from "./ChatServer.js"
import * as Telemetry from "./Telemetry.js"

const port = Number(process.env["PORT"] ?? 4000)
const host = process.env["HOST"] ?? "127.0.0.1"
const announceJoins = process.env["CHAT_ANNOUNCE_JOINS"] !== "false"
const metrics = process.env["CHAT_METRICS"] !== "false"
const traces = process.env["CHAT_TRACES"] ?? "none"
if (!Telemetry.isTraces(traces)) throw new Error(`CHAT_TRACES must be none, console or discard; got ${traces}`)

ChatServer.layer({ host, port, announceJoins, metrics, traces }).pipe(Layer.launch, NodeRuntime.runMain)
