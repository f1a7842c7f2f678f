export default ["packages/channels", "packages/node", "packages/integration", "packages/example-chat", "packages/redis"]
