import { defineProject } from "vitest/config"

// Workspace packages resolve to their TypeScript sources: no build before the tests.
const conditions = ["@effect-channels/source", "node", "development|production"]

export default defineProject({
  resolve: { conditions },
  ssr: { resolve: { conditions } },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000
  }
})
