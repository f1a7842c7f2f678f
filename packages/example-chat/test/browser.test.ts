/**
 * The chat page as people use it: in Chromium (headless), against the chat
 * server on a free port. Each person has a browser context of their own.
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { Chromium, count, openPage, type Person, startChat } from "./fixtures/browser.js"
import * as TcpProxy from "./fixtures/tcpProxy.js"

const sorted = (names: ReadonlyArray<string>) => [...names].sort()

/** Chooses a name and waits until the page says it is in the lobby under it. */
const enter = (person: Person, name: string) =>
  Effect.gen(function*() {
    yield* person.chooseName(name)
    yield* person.until(`"Connected as ${name}"`, (view) => view.status === `Connected as ${name}`)
  })

const onlineAre = (person: Person, names: ReadonlyArray<string>) =>
  person.until(`the online list ${names.join(", ")}`, (view) =>
    JSON.stringify(view.online) === JSON.stringify(sorted(names)))

const shows = (person: Person, line: string) => person.until(`"${line}"`, (view) => view.log.includes(line))

/** What the page says when a rejoin could not get back what it missed. */
const gap = "Messages sent while you were away are not shown: the lobby no longer has them."

/** Posts a message into the lobby from outside any channel (`PUT /broadcast`). */
const post = (base: string, user: string, body: string) =>
  Effect.promise(async () => {
    const response = await fetch(`${base}/broadcast`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user, body })
    })
    expect(response.status).toBe(200)
  })

/**
 * What is wrong with the layout for a person at this width: the document
 * wider than the viewport, a sideways scroll that moves it, an element that
 * can scroll horizontally and has something to scroll, or a control (the name
 * and message fields, their buttons) not entirely on screen or covered by
 * something else.
 */
const layoutProblems = (person: Person) =>
  Effect.promise(() =>
    person.page.evaluate(() => {
      const root = document.scrollingElement!
      const found: Array<string> = []
      if (root.scrollWidth > window.innerWidth) found.push(`the document is ${root.scrollWidth} px wide`)
      window.scrollTo(200, 0)
      if (window.scrollX !== 0) found.push(`the page scrolled by ${window.scrollX} px`)
      window.scrollTo(0, window.scrollY)
      for (const element of Array.from(document.querySelectorAll("body *"))) {
        const { overflowX } = getComputedStyle(element)
        if ((overflowX === "auto" || overflowX === "scroll") && element.scrollWidth > element.clientWidth) {
          found.push(`#${element.id || element.tagName} scrolls sideways by ${element.scrollWidth - element.clientWidth} px`)
        }
      }
      for (const id of ["user", "join", "body", "send"]) {
        const control = document.getElementById(id)!
        const box = control.getBoundingClientRect()
        if (box.left < 0 || box.right > window.innerWidth || box.top < 0 || box.bottom > window.innerHeight) {
          found.push(`#${id} is not entirely on screen: ${JSON.stringify(box)}`)
        }
        const hit = document.elementFromPoint(box.left + box.width / 2, box.top + box.height / 2)
        if (hit === null || !control.contains(hit)) found.push(`#${id} is covered by ${hit?.id || hit?.tagName}`)
      }
      return found
    })
  )

layer(Chromium.layer, { excludeTestServices: true, timeout: "30 seconds" })("the chat page in Chromium", (it) => {
  it.scoped("two people chat both ways, and each online list shows the names they typed, renames included", () =>
    Effect.gen(function*() {
      const chat = yield* startChat()
      const ada = yield* openPage(chat.base)
      const bob = yield* openPage(chat.base)
      // Before a name is chosen the page is not in the lobby: nobody is listed under a made-up name.
      expect((yield* ada.view).status).toBe("Choose a name to join the lobby.")
      yield* enter(ada, "ada")
      // Joining moves the focus to the message field.
      expect(yield* Effect.promise(() => ada.page.evaluate(() => document.activeElement?.id))).toBe("body")
      yield* enter(bob, "bob")
      yield* ada.say("hello bob")
      yield* bob.say("hi ada")
      for (const person of [ada, bob]) {
        yield* shows(person, "ada: hello bob")
        yield* shows(person, "bob: hi ada")
        yield* onlineAre(person, ["ada", "bob"])
      }

      // A new name is the name everywhere: in the online lists and on the messages.
      yield* bob.chooseName("robert")
      yield* bob.until("\"Connected as robert\"", (view) => view.status === "Connected as robert")
      yield* bob.say("it is robert now")
      for (const person of [ada, bob]) {
        yield* shows(person, "bob is now robert")
        yield* shows(person, "robert: it is robert now")
        yield* onlineAre(person, ["ada", "robert"])
      }
      expect((yield* ada.view).notices).toEqual(["ada entered", "bob entered", "bob is now robert"])

      // After a reload the page comes back under the last name, without asking.
      yield* Effect.promise(() => bob.page.reload())
      yield* bob.until("\"Connected as robert\" after the reload", (view) => view.status === "Connected as robert")
      yield* onlineAre(ada, ["ada", "robert"])
      yield* onlineAre(bob, ["ada", "robert"])

      expect([...ada.problems, ...bob.problems]).toEqual([])
      expect(ada.webSockets).toHaveLength(1)
    }), 30_000)

  it.scoped("the server stops and starts again: both pages reconnect and rejoin by themselves, without repeated notices, and a message typed meanwhile arrives once", () =>
    Effect.gen(function*() {
      const first = yield* startChat()
      const ada = yield* openPage(first.base)
      const bob = yield* openPage(first.base)
      yield* enter(ada, "ada")
      yield* enter(bob, "bob")
      yield* onlineAre(ada, ["ada", "bob"])
      yield* onlineAre(bob, ["ada", "bob"])
      const noticesBefore = [(yield* ada.view).notices, (yield* bob.view).notices]

      yield* first.stop
      for (const person of [ada, bob]) {
        yield* person.until("the page to say it is reconnecting", (view) => /reconnecting/i.test(view.status))
      }
      // Ada's network stays down a little longer than the server, so that Bob is back when her message
      // goes out (what is broadcast while a member is away is not kept for them).
      yield* Effect.promise(() => ada.page.context().setOffline(true))
      yield* ada.say("typed while the server was away")
      // Shown at once, marked as not sent yet.
      yield* ada.until("the message shown as waiting", (view) =>
        view.log.some((line) => line.startsWith("ada: typed while the server was away (not sent yet")))

      yield* startChat(first.port)
      yield* bob.until("\"Connected as bob\" again", (view) => view.status === "Connected as bob")
      yield* onlineAre(bob, ["bob"])
      expect((yield* ada.view).status).toMatch(/reconnecting/i)
      yield* Effect.promise(() => ada.page.context().setOffline(false))
      yield* ada.until("\"Connected as ada\" again", (view) => view.status === "Connected as ada")
      // A message sent after the one typed offline, on the same connection, arrives after it (and after
      // any copy of it): once it is shown, the count is final.
      yield* shows(ada, "ada: typed while the server was away")
      yield* ada.say("and this one after")
      for (const person of [ada, bob]) {
        yield* shows(person, "ada: and this one after")
        const view = yield* onlineAre(person, ["ada", "bob"])
        expect(count(view, "ada: typed while the server was away")).toBe(1)
        expect(view.log.filter((line) => line.includes("not sent yet"))).toEqual([])
      }
      expect([(yield* ada.view).notices, (yield* bob.view).notices]).toEqual(noticesBefore)
      // The restarted server's history is a new one: each page says once that it missed what it could not get.
      for (const person of [ada, bob]) expect(count(yield* person.view, gap)).toBe(1)
      expect([...ada.problems, ...bob.problems]).toEqual([])
    }), 30_000)

  it.scoped("the page's connection cut for a few seconds: every message posted meanwhile shows once, in order, after it reconnects", () =>
    Effect.gen(function*() {
      const chat = yield* startChat()
      // The page reaches the server through a proxy that resets its connections: no close frame, no FIN.
      const proxy = yield* TcpProxy.start(chat.port)
      const ada = yield* openPage(`http://127.0.0.1:${proxy.port}`)
      yield* enter(ada, "ada")
      yield* post(chat.base, "bob", "before the cut")
      yield* shows(ada, "bob: before the cut")

      yield* proxy.cut
      yield* ada.until("the page to say it is reconnecting", (view) => /reconnecting/i.test(view.status))
      const missed = ["one", "two", "three", "four", "five"].map((word) => `sent while ada was cut off: ${word}`)
      for (const body of missed) yield* post(chat.base, "bob", body)
      // A few seconds down: the page's attempts to reconnect are reset one after another, phoenix backing
      // off between them (10 ms, 50 ms, ... 1 s: eight attempts take over two seconds).
      const started = Date.now()
      while (proxy.refused() < 8) yield* Effect.sleep(50)
      expect(Date.now() - started).toBeGreaterThan(1500)
      expect((yield* ada.view).status).toMatch(/reconnecting/i)
      yield* proxy.restore

      yield* ada.until("\"Connected as ada\" again", (view) => view.status === "Connected as ada")
      // Live messages come after what is replayed: once this one shows, the log is final.
      yield* post(chat.base, "bob", "after the cut")
      const view = yield* shows(ada, "bob: after the cut")
      expect(view.log.filter((line) => line.startsWith("bob: "))).toEqual([
        "bob: before the cut",
        ...missed.map((body) => `bob: ${body}`),
        "bob: after the cut"
      ])
      expect(count(view, gap)).toBe(0)
      expect(ada.webSockets.length).toBeGreaterThanOrEqual(2)
      expect(ada.problems).toEqual([])
    }), 30_000)

  it.scoped("at 390 px wide nothing scrolls sideways, before and after messages arrive, every control is on screen, and so is the online list", () =>
    Effect.gen(function*() {
      const chat = yield* startChat()
      const ada = yield* openPage(chat.base, { width: 390, height: 800 })
      const bob = yield* openPage(chat.base)
      expect(yield* layoutProblems(ada)).toEqual([])
      yield* enter(ada, "ada")
      yield* enter(bob, "bob")
      expect(yield* layoutProblems(ada)).toEqual([])

      yield* bob.say(`a word too long for any screen: ${"x".repeat(300)}`)
      yield* bob.say("a long message that wraps over several lines on a phone, ".repeat(4))
      for (let i = 1; i <= 30; i++) yield* bob.say(`message ${i}`)
      yield* shows(ada, "bob: message 30")
      expect(yield* layoutProblems(ada)).toEqual([])

      // The newest message is in view: the log follows the conversation.
      const last = ada.page.locator("#messages li").last()
      expect(yield* Effect.promise(() => last.isVisible())).toBe(true)
      const [lastBox, logBox] = yield* Effect.promise(() =>
        Promise.all([last.boundingBox(), ada.page.locator("#messages").boundingBox()])
      )
      expect(lastBox!.y + lastBox!.height).toBeLessThanOrEqual(logBox!.y + logBox!.height + 1)

      // The online list is on screen, within the width, with both names.
      yield* onlineAre(ada, ["ada", "bob"])
      for (const name of ["ada", "bob"]) {
        const entry = ada.page.locator("#online li", { hasText: name })
        expect(yield* Effect.promise(() => entry.isVisible())).toBe(true)
        const box = (yield* Effect.promise(() => entry.boundingBox()))!
        expect(box.x).toBeGreaterThanOrEqual(0)
        expect(box.x + box.width).toBeLessThanOrEqual(390)
        expect(box.y + box.height).toBeLessThanOrEqual(800)
      }
      expect([...ada.problems, ...bob.problems]).toEqual([])
    }), 30_000)
})
