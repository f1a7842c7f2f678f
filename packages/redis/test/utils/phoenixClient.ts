/**
 * The official `phoenix` client as Effects: the integration tests' helpers,
 * written once there.
 */
export * from "../../../integration/test/utils/phoenixClient.js"
