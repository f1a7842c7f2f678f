/**
 * The long-poll transport, as Phoenix serves it. A session is a connection
 * like any other, admitted by the socket's `accept` and run by the same
 * runtime, on a transport that queues what the runtime writes until the
 * client's next poll takes it, and feeds the runtime the lines of the
 * client's POSTs.
 */
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Config from "effect/Config"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Runtime from "effect/Runtime"
import * as Scope from "effect/Scope"
import type { ChannelSocket } from "../ChannelSocket.js"
import type { Frame } from "../protocol/Message.js"
import * as SessionRelay from "../transport/SessionRelay.js"
import type { Listener, Opened, Transport } from "../transport/Transport.js"
import * as Token from "./sessionToken.js"

/** @internal */
export interface Options {
  readonly window?: Duration.DurationInput | undefined
  readonly secret?: string | Redacted.Redacted<string> | undefined
  readonly tokenMaxAge?: Duration.DurationInput | undefined
}

/** The configuration read for the secret when the options give none. */
const secretConfig = Config.redacted("EFFECT_CHANNELS_SECRET")

/** Lines of a POST handled, at most, as Phoenix (the client sends at most 100 per POST). */
const maxLinesPerPost = 100

/** How much longer than its window a relayed poll waits for the owner's answer (and a relayed POST at all). */
const relayGraceMillis = 5000

const tokenHeader = "x-phoenix-longpoll-token"
const authTokenHeader = "x-phoenix-authtoken"

const toBase64 = (bytes: Uint8Array): string => {
  let binary = ""
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000) as unknown as Array<number>)
  }
  return btoa(binary)
}

const fromBase64 = (text: string): Uint8Array | undefined => {
  try {
    const binary = atob(text)
    return Uint8Array.from(binary, (char) => char.charCodeAt(0))
  } catch {
    return undefined
  }
}

/** What a poll is answered with: the messages, or the status alone. */
type PollAnswer =
  | { readonly _tag: "Messages"; readonly messages: ReadonlyArray<string> }
  | { readonly _tag: "NoContent" }
  | { readonly _tag: "Gone" }

const noContent: PollAnswer = { _tag: "NoContent" }
const gone: PollAnswer = { _tag: "Gone" }

/**
 * A session's transport: what the runtime writes is queued (binary frames
 * base64-encoded) for the next poll; a poll waiting is answered as soon as
 * something is queued.
 */
class Session implements Transport {
  queue: Array<string> = []
  queuedBytes = 0
  listener: Listener | undefined = undefined
  /** The latest poll waiting; an older one waits out its window. */
  waiting: ((answer: Effect.Effect<PollAnswer>) => void) | undefined = undefined
  lastPoll: number
  ended = false

  constructor(readonly server: Server, readonly id: string, readonly token: string, now: number) {
    this.lastPoll = now
  }

  send(frame: Frame): void {
    if (this.ended) return
    const text = typeof frame === "string" ? frame : toBase64(frame)
    this.queue.push(text)
    this.queuedBytes += text.length
    this.notify()
  }
  sendAll(frames: ReadonlyArray<Frame>): void {
    for (const frame of frames) this.send(frame)
  }
  bufferedAmount(): number {
    return this.queuedBytes
  }
  close(): void {
    this.end()
  }
  abort(): void {
    this.end()
  }

  /** Wakes the waiting poll, which takes the queue when it runs: what is sent meanwhile goes with it. */
  notify(): void {
    const resume = this.waiting
    if (resume === undefined) return
    this.waiting = undefined
    resume(Effect.sync(() => this.take()))
  }

  take(): PollAnswer {
    if (this.queue.length === 0) return this.ended ? gone : noContent
    const messages = this.queue
    this.queue = []
    this.queuedBytes = 0
    return { _tag: "Messages", messages }
  }

  /** Ends the session: a waiting poll takes what is left, later requests are told it is gone. */
  end(): void {
    if (this.ended) return
    this.ended = true
    this.server.sessions.delete(this.id)
    this.notify()
    this.listener?.onClose()
  }

  poll(window: Duration.Duration): Effect.Effect<PollAnswer> {
    return Effect.suspend(() => {
      this.lastPoll = this.server.clock.unsafeCurrentTimeMillis()
      if (this.queue.length > 0 || this.ended) return Effect.succeed(this.take())
      const wait = Effect.async<PollAnswer>((resume) => {
        this.waiting = resume
        return Effect.sync(() => {
          if (this.waiting === resume) this.waiting = undefined
        })
      })
      // Interruptible whatever the server runs the request in: the window's
      // end, the client going away and the server stopping end the wait.
      return Effect.timeoutTo(Effect.interruptible(wait), {
        duration: window,
        onSuccess: (polled) => polled,
        onTimeout: () => noContent
      })
    })
  }

  opened(): Opened {
    return {
      transport: this,
      heartbeats: false,
      listen: (listener) =>
        Effect.sync(() => {
          this.listener = listener
          if (this.ended) listener.onClose()
        })
    }
  }
}

/** @internal */
export interface Server {
  readonly sessions: Map<string, Session>
  readonly clock: Clock.Clock
  readonly handle: Effect.Effect<HttpServerResponse.HttpServerResponse, never, HttpServerRequest.HttpServerRequest>
}

const answer = (body: SessionRelay.Answer) =>
  HttpServerResponse.text(JSON.stringify(body), {
    contentType: "application/json; charset=utf-8",
    headers: {
      "access-control-allow-origin": "*",
      // The poll URL can be the same for every session (token in a header): never cached.
      "cache-control": "no-store"
    }
  })

const goneAnswer: SessionRelay.Answer = { status: 410 }
const status = (code: number) => answer({ status: code })

const headersOf = (request: HttpServerRequest.HttpServerRequest): Readonly<Record<string, string | undefined>> =>
  request.headers as Readonly<Record<string, string | undefined>>

/** The session token a request carries: the header, else the last `token` query parameter. */
const tokenOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const header = headersOf(request)[tokenHeader]
  if (header !== undefined && header !== "") return header
  const tokens = new URL(request.url, "http://localhost").searchParams.getAll("token")
  return tokens.length === 0 ? undefined : tokens[tokens.length - 1]
}

/**
 * Makes the long-poll server of `socket`: its sessions, each a fiber in
 * `scope`, and one sweeper that ends the sessions not polled for 1.5 poll
 * windows.
 *
 * @internal
 */
export const make = (
  socket: ChannelSocket,
  options: Options,
  scope: Scope.Scope
): Effect.Effect<Server> =>
  Effect.gen(function*() {
    const window = Duration.decode(options.window ?? "10 seconds")
    const windowMillis = Duration.toMillis(window)
    const idleMillis = windowMillis * 1.5
    const configured = options.secret !== undefined
      ? Option.some(typeof options.secret === "string" ? options.secret : Redacted.value(options.secret))
      : Option.map(yield* Effect.orElseSucceed(Config.option(secretConfig), () => Option.none()), Redacted.value)
    if (Option.isNone(configured)) {
      yield* Effect.logWarning(
        "long-poll: no secret configured (the `secret` option or EFFECT_CHANNELS_SECRET), a random one is used: " +
          "every node serving the same clients needs the same secret"
      )
    }
    const secret = Option.match(configured, {
      onNone: Token.randomSecret,
      onSome: (secret) => new TextEncoder().encode(secret)
    })
    const signer = yield* Token.makeSigner(secret, Duration.toMillis(Duration.decode(options.tokenMaxAge ?? "14 days")))
    const clock = yield* Effect.clock
    const relay = Option.getOrElse(yield* Effect.serviceOption(SessionRelay.SessionRelay), () => SessionRelay.local)
    // The owner of a session is the node whose address ends its id: set
    // once `relay.register` gives it, before any session opens.
    let ownPart = ""
    // Sessions and the sweeper run in fibers of their own, forked with the
    // context the server was made in: not in a request's fiber, whose context
    // (the request itself) a session would otherwise hold for its whole life,
    // and whose interruptibility the server decides.
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const sessions = new Map<string, Session>()
    let sweeping = false

    const sweeper = Effect.gen(function*() {
      while (sessions.size > 0) {
        yield* Effect.sleep(Math.min(1000, Math.max(10, Math.floor(idleMillis / 8))))
        const now = clock.unsafeCurrentTimeMillis()
        for (const session of sessions.values()) {
          if (session.waiting === undefined && now - session.lastPoll >= idleMillis) {
            yield* Effect.logDebug("long-poll session not polled, ending it")
            session.end()
          }
        }
      }
      sweeping = false
    })

    /** Serves an accepted session until it ends, then closes its scope. */
    const serve = (sessionScope: Scope.CloseableScope, run: Effect.Effect<void>) =>
      Effect.uninterruptible(Effect.matchCauseEffect(Effect.interruptible(run), {
        onFailure: (cause) => Scope.close(sessionScope, Exit.failCause(cause)),
        onSuccess: () => Scope.close(sessionScope, Exit.void)
      }))

    const open = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.gen(function*() {
        const sessionScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
        const id = Token.randomId() + ownPart
        const now = clock.unsafeCurrentTimeMillis()
        const token = yield* signer.sign(id, now)
        const headers = headersOf(request)
        let session: Session | undefined
        const accepting = socket.accept(
          {
            transport: "longpoll",
            url: request.url,
            headers,
            remoteAddress: request.remoteAddress,
            authToken: Option.fromNullable(headers[authTokenHeader])
          },
          () =>
            Effect.sync(() => {
              session = new Session(server, id, token, now)
              return session.opened()
            }),
          sessionScope
        ).pipe(Effect.onError((cause) => Scope.close(sessionScope, Exit.failCause(cause))))
        // Admitted (the handler's `connect` run) in an interruptible fiber of
        // the server's scope, not in the request's, which the platform's HTTP
        // server may run uninterruptibly and waits for on shutdown: closing
        // the server interrupts a `connect` that never answers, and the
        // request is answered 503. The client going away interrupts it too.
        const admission = yield* Effect.forkIn(Effect.interruptible(accepting), scope)
        const admitted = yield* Effect.onInterrupt(
          Effect.interruptible(Fiber.await(admission)),
          () => Fiber.interrupt(admission)
        )
        if (Exit.isFailure(admitted)) {
          if (Cause.isInterruptedOnly(admitted.cause)) return status(503)
          return yield* Effect.failCause(admitted.cause)
        }
        const accepted = admitted.value
        sessions.set(id, session!)
        runFork(serve(sessionScope, accepted.run), { scope })
        if (!sweeping) {
          sweeping = true
          runFork(sweeper, { scope })
        }
        return answer({ status: 410, token, messages: [] })
      }).pipe(
        Effect.catchAll((refused) => Effect.succeed(status(refused.status)))
      )

    /** The session a token names, if it verifies: this node's, or the address of its owner. */
    const resume = (token: string | undefined) =>
      token === undefined
        ? Effect.succeed(undefined)
        : Effect.map(signer.verify(token, clock.unsafeCurrentTimeMillis()), (id) => {
          if (id === undefined) return undefined
          const owner = id.slice(Token.randomIdLength)
          return owner === ownPart
            ? { id, local: true, owner: undefined }
            : { id, local: false, owner: Token.decodeText(owner) }
        })

    const pollLocal = (session: Session | undefined): Effect.Effect<SessionRelay.Answer> =>
      session === undefined
        ? Effect.succeed(goneAnswer)
        : Effect.map(session.poll(window), (polled): SessionRelay.Answer => {
          switch (polled._tag) {
            case "Messages":
              return { status: 200, token: session.token, messages: polled.messages }
            case "NoContent":
              return { status: 204, token: session.token, messages: [] }
            case "Gone":
              return goneAnswer
          }
        })

    const forward = (owner: string | undefined, id: string, request: SessionRelay.Request, timeout: number) =>
      owner === undefined
        ? Effect.succeed(status(410))
        : Effect.map(
          // Interruptible as a local poll's wait: the client going away cancels it on the owner.
          Effect.interruptible(relay.forward(owner, id, request, Duration.millis(timeout))),
          (answered) => answered === undefined ? status(410) : answer(answered)
        )

    const poll = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.flatMap(resume(tokenOf(request)), (found) => {
        // As Phoenix: a token that does not verify (none, a connect parameter
        // named `token`, a forged or expired one) opens a new session.
        if (found === undefined) return open(request)
        if (!found.local) {
          return forward(found.owner, found.id, { _tag: "Poll" }, windowMillis + relayGraceMillis)
        }
        return Effect.map(pollLocal(sessions.get(found.id)), answer)
      })

    /** The frames of a POST body: ndjson lines (`[` or `{` starts JSON, else base64 binary), or the body as one text frame. */
    const framesOf = (body: string, ndjson: boolean): ReadonlyArray<Frame> | undefined => {
      if (!ndjson) return [body]
      const frames: Array<Frame> = []
      let start = 0
      // Line by line, never splitting the whole body: only the first lines are handled.
      while (start <= body.length && frames.length < maxLinesPerPost) {
        let end = body.indexOf("\n", start)
        if (end === -1) end = body.length
        let line = body.slice(start, end)
        if (line.endsWith("\r")) line = line.slice(0, -1)
        start = end + 1
        if (line === "") continue
        // `[` starts a V2 message; `{` a V1 one (base64 has neither).
        if (line.startsWith("[") || line.startsWith("{")) {
          frames.push(line)
        } else {
          const bytes = fromBase64(line)
          if (bytes === undefined) return undefined
          frames.push(bytes)
        }
      }
      return frames
    }

    /** Feeds `session` the frames of a POST body. */
    const postLocal = (session: Session | undefined, body: string, ndjson: boolean): SessionRelay.Answer => {
      if (session === undefined || session.ended) return goneAnswer
      const frames = framesOf(body, ndjson)
      if (frames === undefined) return { status: 400 }
      for (const frame of frames) {
        if (session.ended) break
        session.listener?.onFrame(frame)
      }
      return session.ended ? goneAnswer : { status: 200, handled: frames.length }
    }

    const publish = (request: HttpServerRequest.HttpServerRequest) =>
      Effect.flatMap(resume(tokenOf(request)), (found) => {
        if (found === undefined) return Effect.succeed(status(410))
        const remote = !found.local
        const session = remote ? undefined : sessions.get(found.id)
        if (!remote && (session === undefined || session.ended)) return Effect.succeed(status(410))
        const ndjson = headersOf(request)["content-type"]?.split(";")[0]?.trim() === "application/x-ndjson"
        // A POST carries at most 100 messages, each at most a frame (base64: 4/3 of it).
        const limit = maxLinesPerPost * (Math.ceil(socket.maxFrameSize * 4 / 3) + 2)
        return request.text.pipe(
          HttpIncomingMessage.withMaxBodySize(Option.some(limit)),
          Effect.matchEffect({
            onFailure: () => Effect.succeed(status(413)),
            onSuccess: (body) =>
              remote
                ? forward(found.owner, found.id, { _tag: "Post", body, ndjson }, relayGraceMillis)
                : Effect.succeed(answer(postLocal(session, body, ndjson)))
          })
        )
      })

    const preflight = (request: HttpServerRequest.HttpServerRequest) =>
      HttpServerResponse.empty({
        status: 200,
        headers: {
          "access-control-allow-origin": "*",
          "access-control-allow-headers": headersOf(request)["access-control-request-headers"] ?? "",
          "access-control-allow-methods": "get, post, options",
          "access-control-max-age": "3600"
        }
      })

    const handle = Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
      switch (request.method) {
        case "GET":
          return poll(request)
        case "POST":
          return publish(request)
        case "OPTIONS":
          return Effect.succeed(preflight(request))
        default:
          return Effect.succeed(HttpServerResponse.empty({ status: 400 }))
      }
    })

    /** A request relayed from another node to a session of this one. */
    const serveRelayed = (id: string, request: SessionRelay.Request): Effect.Effect<SessionRelay.Answer> =>
      request._tag === "Poll"
        ? pollLocal(sessions.get(id))
        : Effect.sync(() => postLocal(sessions.get(id), request.body, request.ndjson))

    ownPart = Token.encodeText(yield* Scope.extend(relay.register(serveRelayed), scope))
    const server: Server = { sessions, clock, handle }
    return server
  })
