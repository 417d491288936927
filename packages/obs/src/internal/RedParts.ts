/**
 * A batch's RED samples in parts, one per (service, 10 s rollup bucket): what a store applies to its
 * rollups once per part, and what the cluster places by service. `RedSampler` builds them on the
 * ingest thread (while a plan is written, or alone with `sampleRed`).
 */
import type { Telemetry } from "@iii/core"
import { type RedPart, rollupBucketSeconds } from "../Store.js"

/** The route a span is rolled up and searched under: its HTTP route, else its name. */
export const routeOf = (span: Telemetry.Span): string => span.http?.route ?? span.name

interface PartBuilder {
  readonly service: string
  readonly bucket: number
  readonly routes: Array<string>
  readonly routeIds: Map<string, number>
  samples: Float64Array
  length: number
}

export class RedSampler {
  /** service → bucket → part (no per-span key string to build). */
  private readonly ids = new Map<string, Map<number, PartBuilder>>()
  private readonly parts: Array<PartBuilder> = []

  add(service: string, route: string, startMicros: number, durationNano: number, error: boolean): void {
    const bucket = bucketOfMicros(startMicros)
    let buckets = this.ids.get(service)
    if (buckets === undefined) {
      buckets = new Map()
      this.ids.set(service, buckets)
    }
    let part = buckets.get(bucket)
    if (part === undefined) {
      part = { service, bucket, routes: [], routeIds: new Map(), samples: new Float64Array(96), length: 0 }
      buckets.set(bucket, part)
      this.parts.push(part)
    }
    let routeId = part.routeIds.get(route)
    if (routeId === undefined) {
      routeId = part.routes.push(route) - 1
      part.routeIds.set(route, routeId)
    }
    if (part.length + 3 > part.samples.length) {
      const bigger = new Float64Array(part.samples.length * 2)
      bigger.set(part.samples)
      part.samples = bigger
    }
    part.samples[part.length] = routeId
    part.samples[part.length + 1] = durationNano
    part.samples[part.length + 2] = error ? 1 : 0
    part.length += 3
  }

  done(): Array<RedPart> {
    return this.parts.map((p) => ({
      service: p.service,
      bucket: p.bucket,
      routes: p.routes,
      samples: p.samples.slice(0, p.length)
    }))
  }
}

const bucketOfMicros = (startMicros: number): number => {
  const sec = Math.floor(startMicros / 1_000_000)
  return sec - (sec % rollupBucketSeconds)
}

/** The RED parts of a batch's server spans. */
export const sampleRed = (spans: ReadonlyArray<Telemetry.Span>): Array<RedPart> => {
  const red = new RedSampler()
  for (const span of spans)
    if (span.kind === "server")
      red.add(
        span.service,
        routeOf(span),
        Number(span.startTimeUnixNano / 1000n),
        span.durationNano,
        span.error
      )
  return red.done()
}
