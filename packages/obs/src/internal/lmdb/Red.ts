/**
 * RED rollups as the store writes them: per (service, route, 10 s bucket) request count, error count
 * and a mergeable latency sketch (core's LatencySketch, milliseconds), from the batches' RED parts
 * (`RedParts.ts`): `RedDeltas` accumulates the parts a transaction stores for the first time in
 * memory, then merges each touched cell into the stored one with one read and one write.
 * Reading them as series is the node's business (`node/RedSeries.ts`).
 */
import { LatencySketch } from "@iii/core"
import { Either } from "effect"
import type { Database } from "lmdb"
import type { RedPart } from "../../Store.js"
import { allRoutes, type RedCellValue, type RedPartValue } from "./Keys.js"

/** A part as the `red-parts` database stores it. */
export const partValue = (part: RedPart): RedPartValue => ({
  routes: part.routes,
  samples: new Uint8Array(part.samples.buffer, part.samples.byteOffset, part.samples.byteLength)
})

/** A stored part back; the samples are copied (stored bytes need not be 8-byte aligned). */
export const partOf = (service: string, bucket: number, value: RedPartValue): RedPart => {
  const samples = new Float64Array(value.samples.byteLength / 8)
  new Uint8Array(samples.buffer).set(value.samples)
  return { service, bucket, routes: value.routes, samples }
}

interface Delta {
  readonly service: string
  readonly route: string
  readonly bucket: number
  count: number
  errors: number
  readonly sketch: LatencySketch.LatencySketch
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

  /** Replays a part's samples (see `RedSampler`). */
  addPart({ service, bucket, routes, samples }: RedPart): void {
    const cells = routes.map((route) => this.cell(service, route, bucket))
    for (let i = 0; i < samples.length; i += 3) {
      const cell = cells[samples[i] ?? 0]
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
