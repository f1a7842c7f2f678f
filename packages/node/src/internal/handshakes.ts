import * as FiberId from "effect/FiberId"
import type * as Http from "node:http"
import type { Duplex } from "node:stream"
import * as Tls from "node:tls"

const requestTimeout = "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"

const ignore = () => {}

type Timer = ReturnType<typeof setTimeout>

/** What admits an upgrade: interrupted when the upgrade runs out of time. */
interface Admission {
  readonly unsafeInterruptAsFork: (fiberId: FiberId.FiberId) => void
}

/**
 * The connections of a server that have not completed their request yet:
 * their headers for an HTTP route, their upgrade up to the `101` for a
 * socket. Each has `millis` to do so, past which it is answered 408 and
 * closed (Node's own header timeout, 60 s checked every 30 s, would hold a
 * stalled connection up to 90 s). On shutdown, those that have not sent
 * their request's headers are closed at once, so that nothing waits for a
 * request that may never come (browsers open connections ahead of need);
 * an upgrade being admitted is answered by its own fiber. A connection
 * leaves with its request: an open connection costs nothing here.
 *
 * @internal
 */
export class Handshakes {
  /** Connections that have not sent their request's headers. */
  readonly #waiting = new Map<Duplex, Timer>()
  /** Upgrades being admitted, until their `101`. */
  readonly #upgrading = new Map<Duplex, Timer>()
  /** The fibers admitting them (the handler's `connect`), while they do. */
  readonly #admissions = new Map<Duplex, Admission>()
  #closed = false

  constructor(readonly millis: number) {}

  /** Watches the connections of `server`, a new server. */
  watch(server: Http.Server): void {
    this.#closed = false
    // On TLS, the request's socket is the TLS one.
    server.on(server instanceof Tls.Server ? "secureConnection" : "connection", (socket: Duplex) => {
      if (this.#closed) return void socket.destroy()
      const timer = setTimeout(this.#expire, this.millis, socket)
      timer.unref()
      this.#waiting.set(socket, timer)
    })
    server.prependListener("request", (request: Http.IncomingMessage) => this.done(request.socket))
  }

  /** An upgrade's headers have come: it is being admitted, within the same time limit. */
  upgrading(socket: Duplex): void {
    const timer = this.#waiting.get(socket)
    if (timer === undefined) return
    this.#waiting.delete(socket)
    this.#upgrading.set(socket, timer)
  }

  /**
   * The upgrade of `socket` is admitted by `fiber`: should it run out of
   * time, the fiber is interrupted (a `connect` hook that never answers
   * ends with its handshake) as the socket is answered 408.
   */
  admitting(socket: Duplex, fiber: Admission): void {
    if (this.#upgrading.has(socket)) this.#admissions.set(socket, fiber)
  }

  /** The connection's request is complete: from now on, Node's timeouts (HTTP) or the socket's (WebSocket) apply. */
  done(socket: Duplex): void {
    const timer = this.#waiting.get(socket) ?? this.#upgrading.get(socket)
    if (timer === undefined) return
    clearTimeout(timer)
    this.#waiting.delete(socket)
    this.#upgrading.delete(socket)
    this.#admissions.delete(socket)
  }

  /** Closes every connection that has not sent its request's headers, and those that come later. */
  closeWaiting(): void {
    this.#closed = true
    for (const [socket, timer] of this.#waiting) {
      clearTimeout(timer)
      socket.destroy()
    }
    this.#waiting.clear()
  }

  readonly #expire = (socket: Duplex) => {
    this.#waiting.delete(socket)
    this.#upgrading.delete(socket)
    const admission = this.#admissions.get(socket)
    if (admission !== undefined) {
      this.#admissions.delete(socket)
      admission.unsafeInterruptAsFork(FiberId.none)
    }
    if (!socket.writable) return socket.destroy()
    // An upgrade's socket has no error listener of Node's any more: a reset while it closes is no crash.
    socket.on("error", ignore)
    socket.end(requestTimeout, () => socket.destroy())
  }
}
