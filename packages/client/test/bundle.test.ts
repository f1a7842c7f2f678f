/**
 * What a page loads: the package bundled for the browser is its own code
 * only, with no import left, so that it runs next to `phoenix.min.js` (which
 * it never imports: it takes the application's `Socket`).
 */
import { build } from "esbuild"
import { dirname, join, relative } from "node:path"
import { fileURLToPath } from "node:url"
import { describe, expect, it } from "vitest"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")

describe("the browser bundle", () => {
  it("holds the package's modules only, imports nothing, and exports make", async () => {
    const result = await build({
      entryPoints: [join(root, "src", "index.ts")],
      bundle: true,
      format: "esm",
      platform: "browser",
      write: false,
      metafile: true,
      logLevel: "silent"
    })
    const inputs = Object.keys(result.metafile.inputs).map((input) => relative(root, join(process.cwd(), input))).sort()
    expect(inputs).toEqual(["src/RecoverableChannel.ts", "src/index.ts"])
    const code = result.outputFiles[0]!.text
    expect(code).not.toMatch(/\bimport\b|\brequire\(/)
    expect(code.length).toBeLessThan(5_000)
    const module = await import(`data:text/javascript;base64,${Buffer.from(code).toString("base64")}`)
    expect(typeof module.RecoverableChannel.make).toBe("function")
  })
})
