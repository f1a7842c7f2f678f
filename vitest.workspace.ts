export default ["packages/channels", "packages/client", "packages/node", "packages/integration", "packages/example-chat", "packages/redis"]
