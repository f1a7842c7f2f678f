// Preloaded into every server the bench starts (`node --expose-gc --import`):
// asked over IPC, it collects the garbage and answers the live heap, so the
// bench reads a connection's live objects apart from the heap V8 keeps
// around them (RSS). It adds nothing else to the server.
process.on("message", (message) => {
  if (message !== "heap?") return
  globalThis.gc()
  globalThis.gc()
  process.send({ heapUsed: process.memoryUsage().heapUsed })
})
// The IPC channel must not keep a server alive that would otherwise end.
process.channel?.unref()
