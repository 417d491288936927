/**
 * The time retention deletes by, guarded against a wall clock that jumps. Trusting the wall clock
 * alone, a clock set a year ahead (by hand, by a VM restore, by a bad NTP source) would delete every
 * span at the next pass. Retention's "now" is the wall clock, but never later than what the node
 * has seen of time passing: the newest span start it has accepted (the ingest window keeps those
 * near the wall clock), or the time it started from plus the time elapsed since on the monotonic
 * clock. A jump forward then deletes nothing early; a jump back only delays deletion. After a
 * restart, the start time is the stored data's newest start when that is earlier than the wall
 * clock, so data a wrong clock would expire waits until new data shows time has moved on.
 */
export class RetentionClock {
  private newestSeen: bigint
  private readonly startedAt: bigint
  private readonly startedMonotonicMs: number
  private readonly wallNano: () => bigint
  private readonly monotonicMs: () => number

  constructor(options: {
    /** The wall clock, in unix nanoseconds (the node's injectable clock). */
    readonly wallNano: () => bigint
    /** A clock that never jumps, in milliseconds (performance.now). */
    readonly monotonicMs: () => number
    /** The newest span start already stored, if any. */
    readonly newestStored: bigint | undefined
  }) {
    this.wallNano = options.wallNano
    this.monotonicMs = options.monotonicMs
    const wall = options.wallNano()
    this.startedAt =
      options.newestStored !== undefined && options.newestStored < wall ? options.newestStored : wall
    this.startedMonotonicMs = options.monotonicMs()
    this.newestSeen = this.startedAt
  }

  /** Records the newest start of a batch ingest accepted. */
  observe(startNano: bigint): void {
    if (startNano > this.newestSeen) this.newestSeen = startNano
  }

  /** Unix nanoseconds that retention takes for now. */
  now(): bigint {
    const elapsed = BigInt(Math.max(0, Math.floor(this.monotonicMs() - this.startedMonotonicMs))) * 1_000_000n
    const watched = this.startedAt + elapsed
    const trusted = watched > this.newestSeen ? watched : this.newestSeen
    const wall = this.wallNano()
    // Bigints: Math.min does not take them.
    if (wall < trusted) return wall
    return trusted
  }
}
