/**
 * Channels of the official `phoenix` client that recover, when they rejoin,
 * the broadcasts they missed while their connection was down: a page whose
 * network drops for a few seconds shows every message sent meanwhile, once,
 * in order; or, when the server no longer has them all, learns that it must
 * fetch its state afresh.
 *
 * It works with an effect-channels server whose topic keeps a history
 * (`ChannelHistory` in `@effect-channels/core`), which numbers each
 * broadcast of the topic with a position carried in the message's `ref`.
 * A recoverable channel is a plain phoenix `Channel`, made by the
 * application's own `Socket`, that:
 *
 * - remembers the last position it saw: from each broadcast, and from the
 *   reply to each join;
 * - sends it with every join and rejoin, as the join param `_position`,
 *   next to the application's params (an object, or a function evaluated on
 *   every join, as phoenix takes them);
 * - strips the reply's `_position` and `_recovered` before the
 *   application's `receive("ok")` callbacks see the response;
 * - tells the application, on each join, whether it recovered.
 *
 * ```ts
 * import { Socket } from "phoenix"
 * import { RecoverableChannel } from "@effect-channels/client"
 *
 * const socket = new Socket("/socket")
 * socket.connect()
 *
 * const lobby = RecoverableChannel.make(socket, "rooms:lobby", () => ({ user: name }), {
 *   // Where a page reloaded in the same tab left off (optional).
 *   position: sessionStorage.getItem("lobby"),
 *   onPosition: (position) => sessionStorage.setItem("lobby", position),
 *   onJoin: ({ recovered, since }) => {
 *     // Missed broadcasts follow the reply when `recovered`; otherwise none will.
 *     if (since !== undefined && !recovered) reloadMessages()
 *   }
 * })
 * lobby.channel.on("new:msg", (message) => render(message))
 * lobby.channel.join().receive("ok", (response) => {
 *   // The application's own response, without `_position` or `_recovered`.
 * })
 * ```
 *
 * It only takes the `Socket` instance and never imports `phoenix` itself, so
 * it works with phoenix from npm as with `phoenix.min.js` on a page (its
 * `Phoenix.Socket`). It hooks the channel's `onMessage`, which phoenix
 * documents as overridable: an application that overrides it as well must
 * call the one it replaces. The callbacks bound with the channel's `on`
 * skip a broadcast the channel has had already (see {@link make}). Positions travel in the V2 messages the
 * official client speaks by default (a join reply is known by its join ref).
 *
 * Recovery needs the server's join reply to be an object (the default `{}`
 * is): a join response of another kind cannot carry `_recovered`, and such a
 * join is reported as not recovered.
 *
 * @since 0.1.0
 */
import type { Channel, Socket } from "phoenix"

/**
 * The join param that carries the last position the channel saw, and the
 * field of the join reply's response that carries the position the channel
 * continues from.
 *
 * @since 0.1.0
 * @category constants
 */
export const positionField = "_position"

/**
 * The field of the join reply's response that says whether the join
 * recovered what the channel missed.
 *
 * @since 0.1.0
 * @category constants
 */
export const recoveredField = "_recovered"

/**
 * What a join's reply said about recovery.
 *
 * @since 0.1.0
 * @category models
 */
export interface Joined {
  /**
   * Whether every broadcast missed since `since` follows the reply, in
   * order, before any live one. `false`: nothing is replayed; with a `since`,
   * something was missed for good (the history no longer holds it, or was
   * lost in a restart), and the application should fetch its state afresh.
   */
  readonly recovered: boolean
  /** The position the join asked to resume from; `undefined` for a first join (nothing to recover). */
  readonly since: string | undefined
  /** The position the channel continues from; `undefined` when the topic keeps no history. */
  readonly position: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The position to resume from on the first join, as kept by `onPosition`
   * (say in `sessionStorage`); what is not a position (`null`, an empty or
   * damaged value) is ignored.
   */
  readonly position?: string | null | undefined
  /** Called with what each join's reply said, before the application's `receive("ok")` callbacks. */
  readonly onJoin?: ((joined: Joined) => void) | undefined
  /** Called whenever the position changes (each broadcast, each join), before the broadcast's callbacks. */
  readonly onPosition?: ((position: string) => void) | undefined
}

/**
 * A phoenix channel that rejoins where it left off.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecoverableChannel {
  /** The phoenix channel: `on`, `join`, `push`, `leave` as usual. */
  readonly channel: Channel
  /** The last position the channel saw (`"epoch:offset"`, opaque), sent with its next join. */
  readonly position: string | undefined
  /** What the last join's reply said; `undefined` before the first reply. */
  readonly joined: Joined | undefined
}

/**
 * The join params, as phoenix takes them: an object, or a function
 * evaluated on every join and rejoin.
 *
 * @since 0.1.0
 * @category models
 */
export type Params = object | (() => object)

/**
 * Whether a message's `ref` is a position: `"epoch:offset"`. Other refs (a
 * reply's, the phoenix client's own numbers) and broadcasts without a
 * position (presence diffs) are not.
 *
 * @since 0.1.0
 * @category guards
 */
export const isPosition = (ref: unknown): ref is string =>
  typeof ref === "string" && ref.length <= 100 && /^.+:(0|[1-9][0-9]{0,15})$/.test(ref)

const isRecord = (value: unknown): value is Record<string, unknown> =>
  typeof value === "object" && value !== null && !Array.isArray(value)

const epochOf = (position: string) => position.slice(0, position.lastIndexOf(":"))
const offsetOf = (position: string) => Number(position.slice(position.lastIndexOf(":") + 1))

/** Whether `position` is at or before `last`, in the same epoch: a broadcast had already. */
const isBehind = (position: string, last: string | undefined) =>
  last !== undefined && epochOf(position) === epochOf(last) && offsetOf(position) <= offsetOf(last)

/**
 * Makes a recoverable channel on `socket` (`socket.channel(topic, ...)`),
 * not joined yet: bind its events, then `join()` it, as with any channel.
 *
 * A broadcast whose position the channel has had already is not given to
 * its callbacks: phoenix hands a channel every broadcast of its topic, and
 * the broadcasts to a channel of the same topic that is still leaving (a
 * join that timed out, a channel left and made again) can reach it before
 * its own join's reply, then come again in what the join replays.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  socket: Pick<Socket, "channel">,
  topic: string,
  params: Params = {},
  options: Options = {}
): RecoverableChannel => {
  let position = isPosition(options.position) ? options.position : undefined
  let since: string | undefined
  let joined: Joined | undefined
  // Whether the message being dispatched is one the channel has had.
  let repeated = false
  const ownParams = typeof params === "function" ? params : () => params

  const advance = (next: string | undefined) => {
    if (next === position) return
    position = next
    if (next !== undefined) options.onPosition?.(next)
  }

  // Evaluated by phoenix on every join it sends: the position is the one at that moment.
  const channel = socket.channel(topic, () => {
    since = position
    const own = ownParams()
    return position === undefined ? own : { ...own, [positionField]: position }
  })

  /** The reply to the join: what it says about recovery, and the response without it. */
  const onJoinReply = (payload: Record<string, unknown>): Record<string, unknown> => {
    const response = payload["response"]
    let recovered = false
    let next: string | undefined
    let handled = payload
    if (isRecord(response)) {
      const { [positionField]: replied, [recoveredField]: flag, ...rest } = response
      recovered = flag === true
      next = isPosition(replied) ? replied : undefined
      if (positionField in response || recoveredField in response) handled = { ...payload, response: rest }
    }
    // What came before the reply, and will be replayed, stays had.
    advance(next !== undefined && isBehind(next, position) ? position : next)
    joined = { recovered, since, position }
    options.onJoin?.(joined)
    return handled
  }

  const previous = channel.onMessage
  channel.onMessage = function(this: Channel, event: string, payload: unknown, ref: unknown, joinRef?: unknown) {
    let handled = payload
    repeated = false
    if (event === "phx_reply") {
      // A join's ref is its join ref; any other reply has a ref of its own.
      if (ref != null && ref === joinRef && isRecord(payload) && payload["status"] === "ok") {
        handled = onJoinReply(payload)
      }
    } else if (isPosition(ref)) {
      // A broadcast, or (intercepted by the channel's `handleOut`) a push with the join ref: the same position.
      repeated = isBehind(ref, position)
      if (!repeated) advance(ref)
    }
    return (previous as (this: Channel, ...args: ReadonlyArray<unknown>) => unknown).call(this, event, handled, ref, joinRef)
  }

  // `onMessage` cannot drop a message: the callbacks bound through `on` skip the repeated ones.
  const on = channel.on
  channel.on = function(this: Channel, event: string, callback: (payload?: unknown, ref?: unknown, joinRef?: unknown) => void) {
    return on.call(this, event, (payload?: unknown, ref?: unknown, joinRef?: unknown) => {
      if (!repeated) return callback(payload, ref, joinRef)
    })
  }

  return {
    channel,
    get position() {
      return position
    },
    get joined() {
      return joined
    }
  }
}
