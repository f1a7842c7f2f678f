export default ["packages/channels", "packages/node", "packages/example-chat"]
