/**
 * The messages presence replication sends between nodes, on one Redis
 * channel, as JSON (metas are JSON already). Every message names its origin
 * node; `v` is the format's version.
 *
 * - `delta`: changes of the origin's own entries, numbered by `seq` (one
 *   more per delta), so that a receiver sees a lost delta as a gap.
 * - `hb`: the origin is alive, and its latest `seq`.
 * - `state`: every entry of the origin as of `seq`; with `ask`, the origin
 *   has just (re)subscribed and asks every node for its own.
 * - `ask`: asks node `of` for its `state` (a receiver that saw a gap).
 * - `bye`: the origin stops; its entries go at once.
 *
 * A node that reads another version, or something malformed, drops it and
 * logs it: nodes of two versions can run side by side during a deploy, each
 * seeing the other's entries leave after the down period.
 */
import * as Either from "effect/Either"
import * as Schema from "effect/Schema"
import type { Presence } from "@effect-channels/core"

/** @internal */
export const version = 1

const Meta = Schema.Struct(
  { phx_ref: Schema.String, phx_ref_prev: Schema.optional(Schema.String) },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

const Join = Schema.Tuple(Schema.Literal("j"), Schema.String, Schema.String, Meta)
const Leave = Schema.Tuple(Schema.Literal("l"), Schema.String, Schema.String, Schema.String)
const Entry = Schema.Tuple(Schema.String, Schema.String, Meta)

const Wire = Schema.Union(
  Schema.Struct({
    v: Schema.Literal(version),
    t: Schema.Literal("delta"),
    node: Schema.String,
    seq: Schema.Number,
    ops: Schema.Array(Schema.Union(Join, Leave))
  }),
  Schema.Struct({ v: Schema.Literal(version), t: Schema.Literal("hb"), node: Schema.String, seq: Schema.Number }),
  Schema.Struct({
    v: Schema.Literal(version),
    t: Schema.Literal("state"),
    node: Schema.String,
    seq: Schema.Number,
    ask: Schema.Boolean,
    entries: Schema.Array(Entry)
  }),
  Schema.Struct({ v: Schema.Literal(version), t: Schema.Literal("ask"), node: Schema.String, of: Schema.String }),
  Schema.Struct({ v: Schema.Literal(version), t: Schema.Literal("bye"), node: Schema.String })
)

/** @internal */
export type Op =
  | readonly ["j", topic: string, key: string, meta: Presence.TrackedMeta]
  | readonly ["l", topic: string, key: string, ref: string]

/** @internal */
export type EntryTuple = readonly [topic: string, key: string, meta: Presence.TrackedMeta]

/** @internal */
export type Message =
  | { readonly t: "delta"; readonly node: string; readonly seq: number; readonly ops: ReadonlyArray<Op> }
  | { readonly t: "hb"; readonly node: string; readonly seq: number }
  | {
    readonly t: "state"
    readonly node: string
    readonly seq: number
    readonly ask: boolean
    readonly entries: ReadonlyArray<EntryTuple>
  }
  | { readonly t: "ask"; readonly node: string; readonly of: string }
  | { readonly t: "bye"; readonly node: string }

const decodeWire = Schema.decodeUnknownEither(Schema.parseJson(Wire))

/** @internal */
export const encode = (message: Message): string => JSON.stringify({ v: version, ...message })

/** The message, or why it cannot be read. @internal */
export const decode = (raw: string): Either.Either<Message, string> =>
  Either.mapLeft(decodeWire(raw), (error) => error.message) as Either.Either<Message, string>
