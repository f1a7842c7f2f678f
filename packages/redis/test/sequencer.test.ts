/**
 * The node's ordering of broadcasts with positions, on its own: what a node
 * delivers when Redis's messages skip offsets, repeat them, or change epoch.
 * The history it reads is a map in memory; the broker's tests read Redis's.
 */
import { Broker, type ChannelHistory, Message } from "@effect-channels/core"
import { describe, expect, it } from "vitest"
import type { Read } from "../src/internal/history.js"
import { Sequencer } from "../src/internal/sequencer.js"

const topic = "rooms:seq"
const at = (offset: number, epoch = "e") =>
  new Broker.Envelope(Message.broadcast(topic, "shout", { offset }), undefined, { epoch, offset })

/** A sequencer over a stream that holds `stored` (offsets), each read answered when `answer` is called. */
const setup = (stored: ReadonlyArray<number>) => {
  const delivered: Array<string> = []
  const pending: Array<() => void> = []
  const reads: Array<ChannelHistory.Position> = []
  let fail = false
  const sequencer = new Sequencer(
    (envelope) => delivered.push(`${envelope.position!.epoch}:${envelope.position!.offset}`),
    (_topic, since) => {
      reads.push(since)
      return new Promise<Read>((resolve, reject) => {
        pending.push(() => {
          if (fail) return reject(new Error("unreachable"))
          const entries = stored.filter((offset) => offset > since.offset).map((offset) => at(offset))
          resolve({ position: { epoch: "e", offset: Math.max(0, ...stored) }, entries, complete: true })
        })
      })
    },
    () => true
  )
  const answer = async () => {
    while (pending.length > 0) {
      pending.shift()!()
      await new Promise((resolve) => setTimeout(resolve, 0))
    }
  }
  return { sequencer, delivered, reads, answer, failReads: () => (fail = true) }
}

describe("Sequencer", () => {
  it("delivers in order, drops repeats, and fills a gap from the history before what showed it", async () => {
    const { answer, delivered, reads, sequencer } = setup([1, 2, 3, 4, 5, 6])
    sequencer.receive(at(1))
    sequencer.receive(at(2))
    sequencer.receive(at(2))
    sequencer.receive(at(5))
    sequencer.receive(at(6))
    expect(delivered).toEqual(["e:1", "e:2"])
    await answer()
    expect(reads).toEqual([{ epoch: "e", offset: 2 }])
    expect(delivered).toEqual(["e:1", "e:2", "e:3", "e:4", "e:5", "e:6"])
  })

  it("gives up what the history no longer holds, and goes on from what showed the gap", async () => {
    const { answer, delivered, sequencer } = setup([4, 5])
    sequencer.receive(at(1))
    sequencer.receive(at(5))
    await answer()
    // 2 and 3 are gone: the channels see the gap and resync, whatever follows it.
    expect(delivered).toEqual(["e:1", "e:5"])
    sequencer.receive(at(6))
    expect(delivered.at(-1)).toBe("e:6")
  })

  it("delivers what waited when Redis cannot be read", async () => {
    const { answer, delivered, failReads, sequencer } = setup([])
    failReads()
    sequencer.receive(at(1))
    sequencer.receive(at(4))
    sequencer.receive(at(5))
    await answer()
    expect(delivered).toEqual(["e:1", "e:4", "e:5"])
  })

  it("checks the history after a reconnection, and takes a new epoch as it comes", async () => {
    const { answer, delivered, sequencer } = setup([1, 2, 3])
    sequencer.baseline(topic, { epoch: "e", offset: 1 })
    sequencer.check(topic)
    await answer()
    expect(delivered).toEqual(["e:2", "e:3"])
    sequencer.receive(at(1, "f"))
    expect(delivered.at(-1)).toBe("f:1")
  })

  it("forgets a topic no longer subscribed, and what its reads bring", async () => {
    const { answer, delivered, sequencer } = setup([1, 2, 3])
    sequencer.receive(at(1))
    sequencer.receive(at(3))
    sequencer.forget(topic)
    await answer()
    expect(delivered).toEqual(["e:1"])
  })
})
