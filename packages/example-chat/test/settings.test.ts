/**
 * The chat's settings, as a newcomer gets them wrong: each mistake is one
 * line naming the setting and the value, and exit code 1.
 */
import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { createServer } from "node:net"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const main = join(dirname(fileURLToPath(import.meta.url)), "..", "src", "main.ts")

/** Runs the chat with `env`; its exit code and what it printed on stderr. */
const runChat = (env: Record<string, string>) =>
  new Promise<{ readonly code: number | null; readonly stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      ["--conditions=@effect-channels/source", "--import", "tsx", main],
      { env: { ...process.env, HOST: "127.0.0.1", ...env }, timeout: 20_000 },
      (error, _stdout, stderr) => resolve({ code: error === null ? 0 : (error as { code?: number }).code ?? null, stderr })
    )
  })

describe.concurrent("the chat's settings", () => {
  it.each([
    ["abc", "PORT must be a port number from 0 to 65535, got \"abc\""],
    ["", "PORT must be a port number from 0 to 65535, got \"\""],
    ["70000", "PORT must be a port number from 0 to 65535, got \"70000\""]
  ])("PORT=%j is refused in one line", async (port, line) => {
    const { code, stderr } = await runChat({ PORT: port })
    expect(code).toBe(1)
    expect(stderr.trim()).toBe(`chat: ${line}`)
  }, 30_000)

  it("CHAT_TRACES must be one of its values", async () => {
    const { code, stderr } = await runChat({ PORT: "0", CHAT_TRACES: "loud" })
    expect(code).toBe(1)
    expect(stderr.trim()).toBe("chat: CHAT_TRACES must be none, console or discard, got \"loud\"")
  }, 30_000)

  it.each([
    [{ CHAT_HISTORY_SIZE: "many" }, "CHAT_HISTORY_SIZE must be a number from 0 to 100000, got \"many\""],
    [{ CHAT_HISTORY_TTL: "0 millis" }, "CHAT_HISTORY_TTL must be a duration such as \"2 minutes\", got \"0 millis\""]
  ])("%j is refused in one line", async (env, line) => {
    const { code, stderr } = await runChat({ PORT: "0", ...env })
    expect(code).toBe(1)
    expect(stderr.trim()).toBe(`chat: ${line}`)
  }, 30_000)

  it("REDIS_URL must be a redis:// URL", async () => {
    const { code, stderr } = await runChat({ PORT: "0", REDIS_URL: "http://127.0.0.1:6379" })
    expect(code).toBe(1)
    expect(stderr.trim()).toBe(
      "chat: invalid RedisBroker options: url must be a redis:// or rediss:// URL with a host, got \"http://127.0.0.1:6379\""
    )
  }, 30_000)

  it("a port in use is one line with the address and the reason", async () => {
    const blocker = createServer()
    await new Promise<void>((resolve) => blocker.listen(0, "127.0.0.1", resolve))
    const port = (blocker.address() as { readonly port: number }).port
    try {
      const { code, stderr } = await runChat({ PORT: String(port) })
      expect(code).toBe(1)
      expect(stderr.trim()).toBe(`chat: cannot listen on 127.0.0.1:${port}: EADDRINUSE`)
    } finally {
      blocker.close()
    }
  }, 30_000)
})
