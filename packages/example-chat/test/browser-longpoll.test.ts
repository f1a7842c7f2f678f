/**
 * The chat page where WebSockets do not work (removed before the page's
 * scripts run): the phoenix client falls back to long-polling
 * (`/socket/longpoll`), and the person chats with one on a WebSocket as a
 * full member, presence included.
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Chromium, openPage, type Person, startChat } from "./fixtures/browser.js"

const enter = (person: Person, name: string) =>
  Effect.gen(function*() {
    yield* person.chooseName(name)
    yield* person.until(`"Connected as ${name}"`, (view) => view.status === `Connected as ${name}`)
  })

const shows = (person: Person, line: string) => person.until(`"${line}"`, (view) => view.log.includes(line))

layer(Chromium.layer, { excludeTestServices: true, timeout: "30 seconds" })("the chat page without WebSocket", (it) => {
  it.scoped("falls back to long-poll and chats with a WebSocket page both ways, presence included", () =>
    Effect.gen(function*() {
      const chat = yield* startChat()
      const ada = yield* openPage(chat.base, { withoutWebSocket: true })
      const bob = yield* openPage(chat.base)
      expect(yield* Effect.promise(() => ada.page.evaluate(() => typeof window.WebSocket))).toBe("undefined")
      yield* enter(ada, "ada")
      yield* enter(bob, "bob")

      yield* ada.say("hello from long-poll")
      yield* bob.say("hello from a WebSocket")
      for (const person of [ada, bob]) {
        yield* shows(person, "ada: hello from long-poll")
        yield* shows(person, "bob: hello from a WebSocket")
        yield* person.until("the online list ada, bob", (view) => JSON.stringify(view.online) === "[\"ada\",\"bob\"]")
      }
      yield* ada.chooseName("lovelace")
      yield* shows(bob, "ada is now lovelace")
      yield* bob.until("the online list bob, lovelace", (view) => JSON.stringify(view.online) === "[\"bob\",\"lovelace\"]")

      // Ada's page talked over long-poll only, Bob's over a WebSocket.
      expect(ada.webSockets).toEqual([])
      expect(ada.longPolls.length).toBeGreaterThan(0)
      expect(bob.webSockets).toHaveLength(1)
      expect(bob.longPolls).toEqual([])
      expect([...ada.problems, ...bob.problems]).toEqual([])
    }), 30_000)
})
