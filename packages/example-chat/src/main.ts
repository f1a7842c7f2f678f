import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Layer from "effect/Layer"
import * as ChatServer from "./ChatServer.js"

const port = Number(process.env["PORT"] ?? 4000)
const host = process.env["HOST"] ?? "127.0.0.1"

ChatServer.layer({ host, port }).pipe(Layer.launch, NodeRuntime.runMain)
