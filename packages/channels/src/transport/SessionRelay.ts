/**
 * Where a long-poll request goes when it reaches a node that does not hold
 * its session. A session lives in the node that opened it (its owner), whose
 * address is in the session's signed token; a poll or a POST that reaches
 * another node is relayed to the owner, which answers it as if it had
 * received it: a relayed poll takes the owner's queue (in order, waiting up
 * to the poll window) and counts as a poll for the session's expiry; a
 * relayed POST feeds the owner's session its lines.
 *
 * The default, `local`, relays nothing: every session is this node's, and a
 * token naming another node's session is answered 410 (the client opens a
 * new session). `@effect-channels/redis` provides one over Redis
 * (`RedisLongPoll.layer`), so that no sticky sessions are needed.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"

/**
 * A request relayed to a session's owner: a poll, or a POST's body.
 *
 * @since 0.1.0
 * @category models
 */
export type Request =
  | { readonly _tag: "Poll" }
  | { readonly _tag: "Post"; readonly body: string; readonly ndjson: boolean }

/**
 * The owner's answer: the JSON body of the long-poll response.
 *
 * @since 0.1.0
 * @category models
 */
export interface Answer {
  readonly status: number
  readonly token?: string
  readonly messages?: ReadonlyArray<string>
  readonly handled?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Registers a long-poll server of this node, which `serve`s the requests
   * relayed to it, for the life of the scope. Gives its address (unique in
   * the cluster), which the server writes in the tokens of the sessions it
   * opens.
   */
  readonly register: (
    serve: (sessionId: string, request: Request) => Effect.Effect<Answer>
  ) => Effect.Effect<string, never, Scope.Scope>
  /**
   * Relays `request` to the server at `address`: its answer, or `undefined`
   * when it cannot be reached within `timeout` (gone, or Redis down).
   */
  readonly forward: (
    address: string,
    sessionId: string,
    request: Request,
    timeout: Duration.Duration
  ) => Effect.Effect<Answer | undefined>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class SessionRelay extends Context.Tag("@effect-channels/core/SessionRelay")<SessionRelay, Service>() {}

/**
 * One node alone: every session is this node's, nothing is relayed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const local: Service = {
  register: () => Effect.succeed(""),
  forward: () => Effect.succeed(undefined)
}

/**
 * @since 0.1.0
 * @category layers
 */
export const layerLocal: Layer.Layer<SessionRelay> = Layer.succeed(SessionRelay, local)
