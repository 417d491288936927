/**
 * RED rollups as the store writes them: per (service, route, 10 s bucket) request count, error count
 * and a mergeable latency sketch (core's LatencySketch, milliseconds). `RedSampler` records a batch's
 * server spans on the ingest thread; `RedDeltas` accumulates the samples of a transaction's stored
 * batches in memory, then merges each touched cell into the stored one with one read and one write.
 * Reading them as series is the node's business (`node/RedSeries.ts`).
 */
import { LatencySketch } from "@iii/core"
import { Either } from "effect"
import type { Database } from "lmdb"
import { rollupBucketSeconds } from "../../Store.js"
import { allRoutes, type RedCellValue } from "./Keys.js"

/**
 * A batch's server spans as RED samples, recorded on the ingest thread and replayed into the round's
 * `RedDeltas` by the writer for the batches it stores (a duplicate batch must not count): the cells
 * the spans fall in, and per span its cell's index, duration (ns) and error flag (1 or 0).
 */
export interface RedSamples {
  readonly cells: ReadonlyArray<readonly [service: string, route: string, bucket: number]>
  /** Triples: cell index, duration in nanoseconds, error. */
  readonly samples: Float64Array
}

export class RedSampler {
  /** service → route → bucket → cell index (no per-span key string to build). */
  private readonly ids = new Map<string, Map<string, Map<number, number>>>()
  private readonly cells: Array<readonly [string, string, number]> = []
  private samples = new Float64Array(96)
  private length = 0

  add(service: string, route: string, startMicros: number, durationNano: number, error: boolean): void {
    const bucket = bucketOfMicros(startMicros)
    let routes = this.ids.get(service)
    if (routes === undefined) {
      routes = new Map()
      this.ids.set(service, routes)
    }
    let buckets = routes.get(route)
    if (buckets === undefined) {
      buckets = new Map()
      routes.set(route, buckets)
    }
    let cell = buckets.get(bucket)
    if (cell === undefined) {
      cell = this.cells.push([service, route, bucket]) - 1
      buckets.set(bucket, cell)
    }
    if (this.length + 3 > this.samples.length) {
      const bigger = new Float64Array(this.samples.length * 2)
      bigger.set(this.samples)
      this.samples = bigger
    }
    this.samples[this.length] = cell
    this.samples[this.length + 1] = durationNano
    this.samples[this.length + 2] = error ? 1 : 0
    this.length += 3
  }

  done(): RedSamples {
    return { cells: this.cells, samples: this.samples.slice(0, this.length) }
  }
}

interface Delta {
  readonly service: string
  readonly route: string
  readonly bucket: number
  count: number
  errors: number
  readonly sketch: LatencySketch.LatencySketch
}

const bucketOfMicros = (startMicros: number): number => {
  const sec = Math.floor(startMicros / 1_000_000)
  return sec - (sec % rollupBucketSeconds)
}

export class RedDeltas {
  private readonly cells = new Map<string, Delta>()

  private cell(service: string, route: string, bucket: number): Delta {
    const id = `${service}\u0000${route}\u0000${bucket}`
    let cell = this.cells.get(id)
    if (cell === undefined) {
      cell = { service, route, bucket, count: 0, errors: 0, sketch: LatencySketch.make() }
      this.cells.set(id, cell)
    }
    return cell
  }

  /** Replays a batch's samples (see `RedSampler`). */
  addSamples({ cells, samples }: RedSamples): void {
    const deltas = cells.map(([service, route, bucket]) => this.cell(service, route, bucket))
    for (let i = 0; i < samples.length; i += 3) {
      const cell = deltas[samples[i] ?? 0]
      if (cell === undefined) continue
      cell.count++
      if (samples[i + 2] === 1) cell.errors++
      LatencySketch.add(cell.sketch, (samples[i + 1] ?? 0) / 1e6)
    }
  }

  /**
   * Adds the all-routes cells (merged from the route cells, so each span is sketched once), then merges
   * every delta into its stored cell; call inside the write transaction.
   */
  // biome-ignore lint/suspicious/noExplicitAny: lmdb keys are untyped arrays
  flush(db: Database<RedCellValue, any>): void {
    for (const c of Array.from(this.cells.values())) {
      const all = this.cell(c.service, allRoutes, c.bucket)
      all.count += c.count
      all.errors += c.errors
      LatencySketch.merge(all.sketch, c.sketch)
    }
    for (const cell of this.cells.values()) {
      const key = [cell.service, cell.route, cell.bucket]
      // A stored cell whose sketch fails validation (corruption) is replaced rather than merged.
      const stored = db.get(key)
      const previous =
        stored === undefined ? undefined : Either.getOrUndefined(LatencySketch.fromData(stored.sketch))
      if (stored !== undefined && previous !== undefined) LatencySketch.merge(cell.sketch, previous)
      db.put(key, {
        count: cell.count + (previous !== undefined ? (stored?.count ?? 0) : 0),
        errors: cell.errors + (previous !== undefined ? (stored?.errors ?? 0) : 0),
        sketch: LatencySketch.toData(cell.sketch)
      })
    }
  }
}
