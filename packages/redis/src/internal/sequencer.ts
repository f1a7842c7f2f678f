import type { Broker, ChannelHistory } from "@effect-channels/core"
import type { Read } from "./history.js"

/** What the node has delivered of a topic with a history. */
interface Topic {
  epoch: string
  /** The offset of the last broadcast delivered. */
  last: number
  /** A read of the history is under way: what arrives meanwhile waits in `queue`. */
  filling: boolean
  queue: Array<Broker.Envelope>
}

/**
 * The broadcasts of topics with a history, as Redis sends them to this
 * node, delivered in the order of their positions, each once. A message
 * whose offset skips some (the subscriber connection dropped and came back)
 * waits while the missing ones are read from the topic's stream and
 * delivered first; those the stream no longer holds stay missing, and the
 * channels, which check positions too, have their clients rejoin.
 *
 * Only the topics `tracked` (subscribed at Redis) are remembered, from their
 * first message or recovery on.
 *
 * @internal
 */
export class Sequencer {
  private readonly topics = new Map<string, Topic>()

  constructor(
    private readonly emit: (envelope: Broker.Envelope) => void,
    private readonly read: (topic: string, since: ChannelHistory.Position) => Promise<Read>,
    private readonly tracked: (topic: string) => boolean
  ) {}

  /** A broadcast with a position, from Redis. */
  receive(envelope: Broker.Envelope): void {
    const name = envelope.message.topic
    const topic = this.topics.get(name)
    if (topic === undefined) {
      const { epoch, offset } = envelope.position!
      if (this.tracked(name)) this.topics.set(name, { epoch, last: offset, filling: false, queue: [] })
      return this.emit(envelope)
    }
    if (topic.filling) topic.queue.push(envelope)
    else this.accept(name, topic, envelope)
  }

  /**
   * The position a recovery read, for a topic that has had no message yet:
   * every channel subscribed before the read, so what is older than it
   * reaches none of them.
   */
  baseline(name: string, position: ChannelHistory.Position): void {
    if (this.topics.has(name) || !this.tracked(name)) return
    this.topics.set(name, { epoch: position.epoch, last: position.offset, filling: false, queue: [] })
  }

  /** Reads what was published since the last delivered, as after the subscriber connection came back. */
  check(name: string): void {
    const topic = this.topics.get(name)
    if (topic !== undefined && !topic.filling) this.fill(name, topic, undefined)
  }

  /** The topic is no longer subscribed: a later subscription starts afresh. */
  forget(name: string): void {
    this.topics.delete(name)
  }

  private accept(name: string, topic: Topic, envelope: Broker.Envelope): void {
    const { epoch, offset } = envelope.position!
    // A new epoch: the history was lost, and the channels resync.
    if (epoch !== topic.epoch) {
      topic.epoch = epoch
      topic.last = offset
      return this.emit(envelope)
    }
    if (offset <= topic.last) return
    if (offset === topic.last + 1) {
      topic.last = offset
      return this.emit(envelope)
    }
    topic.queue.push(envelope)
    this.fill(name, topic, offset)
  }

  /** Delivers what the stream holds after the last delivered (up to `until`, the message that showed the gap), then what waited. */
  private fill(name: string, topic: Topic, until: number | undefined): void {
    topic.filling = true
    const deliver = (read: Read) => {
      if (this.topics.get(name) !== topic || read.position.epoch !== topic.epoch) return
      for (const envelope of read.entries) {
        if (envelope.position!.offset !== topic.last + 1) continue
        topic.last++
        this.emit(envelope)
      }
    }
    this.read(name, { epoch: topic.epoch, offset: topic.last }).then(deliver, ignore).finally(() => {
      if (this.topics.get(name) !== topic) return
      topic.filling = false
      // What the stream no longer holds is given up: delivery goes on after it.
      if (until !== undefined) topic.last = Math.max(topic.last, until - 1)
      const queue = topic.queue
      topic.queue = []
      for (let i = 0; i < queue.length; i++) {
        if (topic.filling) {
          topic.queue.push(...queue.slice(i))
          return
        }
        this.accept(name, topic, queue[i]!)
      }
    })
  }
}

const ignore = () => {}
