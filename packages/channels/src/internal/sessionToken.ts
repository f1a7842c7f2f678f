/**
 * Long-poll session tokens: `<session id>.<issued at, ms>.<HMAC-SHA256>`,
 * base64url, signed with the Web Crypto API (no platform dependency). A
 * token names its session and when it was issued, nothing else: what the
 * session holds stays on the server.
 */
import * as Effect from "effect/Effect"

/** @internal */
export interface Signer {
  readonly sign: (sessionId: string, issuedAt: number) => Effect.Effect<string>
  /** The session a token names, if its signature holds and it is not older than `maxAgeMillis`. */
  readonly verify: (token: string, now: number) => Effect.Effect<string | undefined>
}

const encoder = new TextEncoder()

const toBase64Url = (bytes: Uint8Array): string => {
  let binary = ""
  for (let i = 0; i < bytes.length; i++) binary += String.fromCharCode(bytes[i]!)
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "")
}

const fromBase64Url = (text: string): Uint8Array<ArrayBuffer> | undefined => {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return undefined
  try {
    const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"))
    return Uint8Array.from(binary, (char) => char.charCodeAt(0))
  } catch {
    return undefined
  }
}

/** A random id of `bytes` bytes, base64url. @internal */
export const randomId = (bytes = 16): string => toBase64Url(crypto.getRandomValues(new Uint8Array(bytes)))

/** A random secret, for when none is configured. @internal */
export const randomSecret = (): Uint8Array<ArrayBuffer> => crypto.getRandomValues(new Uint8Array(32))

/** @internal */
export const makeSigner = (secret: Uint8Array<ArrayBuffer>, maxAgeMillis: number): Effect.Effect<Signer> =>
  Effect.map(
    Effect.promise(() =>
      crypto.subtle.importKey("raw", secret, { name: "HMAC", hash: "SHA-256" }, false, ["sign", "verify"])
    ),
    (key): Signer => ({
      sign: (sessionId, issuedAt) =>
        Effect.promise(async () => {
          const data = `${sessionId}.${issuedAt.toString(36)}`
          const signature = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(data)))
          return `${data}.${toBase64Url(signature)}`
        }),
      verify: (token, now) =>
        Effect.promise(async () => {
          const parts = token.split(".")
          if (parts.length !== 3) return undefined
          const [sessionId, issued, encoded] = parts as [string, string, string]
          const signature = fromBase64Url(encoded)
          if (signature === undefined || signature.length !== 32) return undefined
          // `verify` compares in constant time.
          const valid = await crypto.subtle.verify("HMAC", key, signature, encoder.encode(`${sessionId}.${issued}`))
          if (!valid) return undefined
          const issuedAt = parseInt(issued, 36)
          if (!Number.isFinite(issuedAt) || now - issuedAt > maxAgeMillis) return undefined
          return sessionId
        })
    })
  )

/** The length of a `randomId()` of 16 bytes. @internal */
export const randomIdLength = 22

/** `text` (UTF-8) as base64url: a node's address in the session ids it makes. @internal */
export const encodeText = (text: string): string => toBase64Url(encoder.encode(text))

/** The text `encodeText` encoded, if it is base64url of UTF-8. @internal */
export const decodeText = (encoded: string): string | undefined => {
  const bytes = fromBase64Url(encoded)
  if (bytes === undefined) return undefined
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes)
  } catch {
    return undefined
  }
}
