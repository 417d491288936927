/**
 * Group commit: batches from every ingest connection queue here and are written together, one LMDB
 * transaction per round, while the previous round is still being flushed. The queue is bounded in
 * spans; connections check `full` after submitting and stop reading their socket until `onRoom` fires,
 * so a slow disk turns into TCP back-pressure on agents instead of memory growth. Each batch is
 * prepared (ObsNode: encoded into its write plan) when it is submitted, not when its round starts.
 */
import { Either } from "effect"
import type { IngestBatch, WriteOutcome } from "../../Store.js"

export interface GroupCommitOptions<P> {
  /**
   * What a submitted batch waits in the queue as; a Left rejects that batch alone, with the Left.
   * Without it, only already prepared items are submitted (`submitPrepared`).
   */
  readonly prepare?: (batch: IngestBatch) => Either.Either<P, unknown>
  /** Stores the prepared batches durably; resolves with one outcome per batch in order. */
  readonly write: (round: ReadonlyArray<P>) => Promise<ReadonlyArray<WriteOutcome>>
  /** Called with the batches a round stored (not duplicates), after they are durable. */
  readonly committed: (round: ReadonlyArray<P>) => void
  /** Spans queued or being written above which `full` is true. */
  readonly maxQueuedSpans: number
  /** Most spans one transaction takes. */
  readonly maxSpansPerCommit: number
  /** Transactions allowed in flight at once (the next one builds while the previous one flushes). */
  readonly maxInFlight: number
}

interface Pending<P> {
  readonly prepared: P
  readonly spans: number
  readonly weight: number
  readonly resolve: (outcome: WriteOutcome) => void
  readonly reject: (error: unknown) => void
}

/** What ingest connections and the metrics endpoint see of a GroupCommit, whatever it prepares batches into. */
export type BatchQueue = Pick<
  GroupCommit<unknown>,
  "submit" | "queueBatch" | "full" | "onRoom" | "depth" | "commits"
>

const weight = (b: IngestBatch) => b.spans.length + b.logs.length + b.metrics.length + 1

export class GroupCommit<P> {
  private queue: Array<Pending<P>> = []
  private inFlight = 0
  private waiting: Array<() => void> = []
  /** Spans (plus logs and metrics) queued or in flight. */
  depth = 0
  commits = 0

  private readonly options: GroupCommitOptions<P>

  constructor(options: GroupCommitOptions<P>) {
    this.options = options
  }

  get full(): boolean {
    return this.depth >= this.options.maxQueuedSpans
  }

  /** Queues a batch; resolves once it is durable (or found duplicate), rejects if its transaction failed. */
  submit(batch: IngestBatch): Promise<WriteOutcome> {
    const queued = this.queueBatch(batch)
    return Either.isLeft(queued) ? Promise.reject(queued.left) : queued.right
  }

  /**
   * `submit`, answering a batch that `prepare` refuses at once, as a Left, rather than with a rejected
   * promise: a caller that would submit the batch again without what was refused knows it before it
   * waits, and need not keep the batch until the commit.
   */
  queueBatch(batch: IngestBatch): Either.Either<Promise<WriteOutcome>, unknown> {
    const prepared =
      this.options.prepare?.(batch) ?? Either.left(new Error("this queue takes prepared items"))
    return Either.map(prepared, (p) => this.submitPrepared(p, batch.spans.length, weight(batch)))
  }

  /** Queues an item prepared elsewhere, of `spans` spans and `weight` spans, logs and points. */
  submitPrepared(prepared: P, spans: number, weight: number): Promise<WriteOutcome> {
    const done = this.enqueue(prepared, spans, weight)
    this.kick()
    return done
  }

  /**
   * Queues items prepared elsewhere all at once, so they share a round instead of the first ones
   * each starting a transaction of their own; one promise per item, in order.
   */
  submitAllPrepared(
    items: ReadonlyArray<{ readonly prepared: P; readonly spans: number; readonly weight: number }>
  ): Array<Promise<WriteOutcome>> {
    const done = items.map((i) => this.enqueue(i.prepared, i.spans, i.weight))
    this.kick()
    return done
  }

  private enqueue(prepared: P, spans: number, weight: number): Promise<WriteOutcome> {
    return new Promise((resolve, reject) => {
      this.queue.push({ prepared, spans, weight, resolve, reject })
      this.depth += weight
    })
  }

  /** Runs `f` once the queue has room again (immediately if it has). */
  onRoom(f: () => void): void {
    if (!this.full) f()
    else this.waiting.push(f)
  }

  private kick(): void {
    while (this.inFlight < this.options.maxInFlight && this.queue.length > 0) {
      let taken = 0
      let spans = 0
      while (taken < this.queue.length && (taken === 0 || spans < this.options.maxSpansPerCommit)) {
        spans += this.queue[taken]?.spans ?? 0
        taken++
      }
      const round = this.queue.slice(0, taken)
      this.queue = this.queue.slice(taken)
      this.inFlight++
      this.options.write(round.map((p) => p.prepared)).then(
        (outcomes) => {
          this.settle(round)
          this.options.committed(round.filter((_, i) => outcomes[i] === "stored").map((p) => p.prepared))
          round.forEach((p, i) => {
            p.resolve(outcomes[i] ?? "stored")
          })
        },
        (error: unknown) => {
          this.settle(round)
          for (const p of round) p.reject(error)
        }
      )
    }
  }

  private settle(round: ReadonlyArray<Pending<P>>): void {
    this.inFlight--
    this.commits++
    for (const p of round) this.depth -= p.weight
    if (!this.full && this.waiting.length > 0) {
      const ready = this.waiting
      this.waiting = []
      for (const f of ready) f()
    }
    this.kick()
  }
}
