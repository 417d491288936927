/**
 * obs query latency with 5 million spans stored: trace by id, service RED over 1 h, correlate.
 * Targets: trace-by-id p99 ≤ 5 ms, RED over 1 h ≤ 50 ms, correlate p99 ≤ 20 ms.
 *
 *   npm run bench:query                  (builds packages/obs, then runs this with Node 24)
 *   OBS_BENCH_SPANS=500000 npm run bench:query
 *   OBS_BENCH_RANDOM_TRACE_IDS=1 npm run bench:query   (trace ids as other tracers mint them: random)
 *   OBS_BENCH_DATA_DIR=/tmp/q5m npm run bench:query    (keeps the store there; a later run with the
 *     same directory and settings queries it again instead of generating: for iterating on reads)
 *   OBS_BENCH_QUERIES=trace npm run bench:query        (only the trace-by-id queries)
 *   OBS_BENCH_COLD=1 npm run bench:query     (drops the store's pages from the page cache before the
 *     node starts, as the kernel's reclaim does with pages left cold, so queries read from the disk)
 *
 * The spans are generated fast by writing straight through the store (`LmdbStore.make`, the same
 * write path ingest uses, minus the WebSocket), spread over the last hour: 1 M traces of 5 spans,
 * 10 services × 8 routes, a fifth of the traces sharing custom correlation ids with logs. Then a
 * node process serves that data directory and the queries go over HTTP, one at a time.
 */
import { spawnSync } from "node:child_process"
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Telemetry } from "@iii/core"
import { LmdbStore } from "@iii/obs"
import { Effect } from "effect"
import { fmt, majorFaults, makeSpan, percentile, spawnNode } from "./obs-support.ts"

const SPANS = Number(process.env.OBS_BENCH_SPANS ?? 5_000_000)
const SPANS_PER_TRACE = 5
const TRACES = Math.floor(SPANS / SPANS_PER_TRACE)
const SERVICES = [
  "checkout",
  "payments",
  "users",
  "catalog",
  "search",
  "cart",
  "auth",
  "orders",
  "stock",
  "mail"
]
const HOUR_NANO = 3_600_000_000_000n
const RANDOM_TRACE_IDS = process.env.OBS_BENCH_RANDOM_TRACE_IDS === "1"
const keptDir = process.env.OBS_BENCH_DATA_DIR
const dir = keptDir ?? mkdtempSync(join(tmpdir(), "iii-bench-query-"))
const dataDir = join(dir, "node")
// A kept store says what it holds, so that a later run asks for the traces it stored.
const settingsFile = join(dir, "settings.json")
const kept =
  keptDir !== undefined && existsSync(settingsFile)
    ? (JSON.parse(readFileSync(settingsFile, "utf8")) as { spans: number; random: boolean; nowMs: number })
    : undefined
if (kept !== undefined && (kept.spans !== SPANS || kept.random !== RANDOM_TRACE_IDS))
  throw new Error(
    `${dir} holds ${kept.spans} spans (random ids: ${kept.random}); remove it or change the settings`
  )
const now = BigInt(kept?.nowMs ?? Date.now()) * 1_000_000n
const QUERIES = process.env.OBS_BENCH_QUERIES ?? "all"
/** MurmurHash3's finalizer: a deterministic, random-looking 32 bits per input. */
const mix = (n: number) => {
  let x = Math.imul(n ^ (n >>> 16), 0x85ebca6b)
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35)
  return (x ^ (x >>> 16)) >>> 0
}
const traceStart = (t: number) => now - HOUR_NANO + (BigInt(t) * HOUR_NANO) / BigInt(TRACES)
// iii's agents mint ids that start with the trace's start time in ms (TraceContext.newTraceId); other
// tracers' are random.
const traceHex = (t: number) =>
  RANDOM_TRACE_IDS
    ? [1, 2, 3, 4]
        .map((k) =>
          mix(t * 4 + k)
            .toString(16)
            .padStart(8, "0")
        )
        .join("")
    : `${(traceStart(t) / 1_000_000n).toString(16).padStart(12, "0")}${(t + 1).toString(16).padStart(20, "0")}`
const correlationOf = (t: number) => (t % 5 === 0 ? `order-${Math.floor(t / 15)}` : undefined)

const traceSpans = (t: number): Array<Telemetry.Span> => {
  const start = traceStart(t)
  const correlationId = correlationOf(t)
  return Array.from({ length: SPANS_PER_TRACE }, (_, i) => {
    const s = makeSpan(t * SPANS_PER_TRACE + i, start, t)
    return {
      ...s,
      traceId: traceHex(t) as Telemetry.TraceId,
      correlationId: traceHex(t),
      service: SERVICES[(t + i) % SERVICES.length] ?? "svc",
      ...(i === 0 ? { parentSpanId: undefined } : {}),
      ...(correlationId !== undefined && { correlationId })
    }
  }).map(({ parentSpanId, ...rest }) => (parentSpanId === undefined ? rest : { ...rest, parentSpanId }))
}

if (kept === undefined) await generate()
else console.log(`obs query: querying the ${fmt(SPANS)} spans kept in ${dir}`)

async function generate() {
  if (keptDir !== undefined) rmSync(dataDir, { recursive: true, force: true })
  console.log(
    `obs query: generating ${fmt(SPANS)} spans (${fmt(TRACES)} traces over the last hour, ${RANDOM_TRACE_IDS ? "random" : "time-prefixed (iii's)"} trace ids) through the store…`
  )
  const genStart = performance.now()
  await Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const store = yield* LmdbStore.make({ path: dataDir })
        const tracesPerBatch = 100
        let seq = 0
        const pending: Array<Promise<unknown>> = []
        for (let t = 0; t < TRACES; t += tracesPerBatch) {
          const spans: Array<Telemetry.Span> = []
          const logs: Array<Telemetry.LogRecord> = []
          for (let k = t; k < Math.min(TRACES, t + tracesPerBatch); k++) {
            const ts = traceSpans(k)
            spans.push(...ts)
            const correlationId = correlationOf(k)
            const first = ts[0]
            if (correlationId !== undefined && first !== undefined)
              logs.push({
                timeUnixNano: first.startTimeUnixNano,
                service: first.service,
                level: "info",
                body: `handled ${correlationId}`,
                traceId: first.traceId,
                correlationId
              })
          }
          pending.push(
            Effect.runPromise(store.writer.write([{ agentId: "gen", seq: ++seq, spans, logs, metrics: [] }]))
          )
          if (pending.length >= 8) yield* Effect.promise(() => pending.shift() ?? Promise.resolve())
          if (seq % 2000 === 0) console.log(`  … ${fmt(seq * tracesPerBatch * SPANS_PER_TRACE)} spans`)
        }
        yield* Effect.promise(() => Promise.all(pending))
      })
    )
  )
  const genSeconds = (performance.now() - genStart) / 1000
  console.log(`  stored in ${fmt(genSeconds, 1)} s (${fmt(SPANS / genSeconds)} spans/s through the store)`)
  if (keptDir !== undefined) {
    mkdirSync(dir, { recursive: true })
    writeFileSync(
      settingsFile,
      JSON.stringify({ spans: SPANS, random: RANDOM_TRACE_IDS, nowMs: Number(now / 1_000_000n) })
    )
  }
}

if (process.env.OBS_BENCH_COLD === "1") {
  // GNU dd: count=0 with iflag=nocache drops the whole file's cached pages.
  const dropped = spawnSync("dd", [
    `if=${join(dataDir, "data.mdb")}`,
    "iflag=nocache",
    "count=0",
    "status=none"
  ])
  if (dropped.status !== 0) throw new Error(`dd could not drop the store's pages: ${dropped.stderr}`)
  console.log("  (the store's pages dropped from the page cache)")
}
const node = await spawnNode(dataDir)
const pid = node.child.pid ?? 0
const time = async (path: string) => {
  const t = performance.now()
  const res = await fetch(`${node.url}${path}`)
  await res.arrayBuffer()
  if (res.status !== 200) throw new Error(`${path}: ${res.status}`)
  return performance.now() - t
}
const measure = async (name: string, count: number, path: (i: number) => string, target: string) => {
  for (let i = 0; i < Math.min(50, count); i++) await time(path(i + 7919)) // warm-up
  const latencies: Array<number> = []
  const faults = majorFaults(pid)
  for (let i = 0; i < count; i++) latencies.push(await time(path(i)))
  latencies.sort((a, b) => a - b)
  console.log(
    `  ${name.padEnd(24)} p50 ${fmt(percentile(latencies, 0.5), 2)} ms, p99 ${fmt(percentile(latencies, 0.99), 2)} ms, max ${fmt(latencies[latencies.length - 1] ?? 0, 1)} ms, ${fmt((majorFaults(pid) - faults) / count, 2)} major faults per request (${count} requests; target ${target})`
  )
}
const random = (i: number, n: number) => (i * 2_654_435_761) % n
console.log("queries over HTTP, one at a time:")
await measure("trace by id", 5000, (i) => `/v1/traces/${traceHex(random(i, TRACES))}`, "p99 ≤ 5 ms")
if (QUERIES === "all") {
  await measure(
    "service RED over 1 h",
    200,
    (i) => `/v1/services/${SERVICES[i % SERVICES.length]}/red?window=1h&step=1m`,
    "≤ 50 ms"
  )
  await measure(
    "correlate",
    2000,
    (i) => `/v1/correlate/order-${random(i, Math.floor(TRACES / 15))}`,
    "p99 ≤ 20 ms"
  )
  await measure(
    "search (service+5xx)",
    200,
    (i) => `/v1/traces?service=${SERVICES[i % SERVICES.length]}&status=5xx&limit=20`,
    "—"
  )
}
node.child.kill(process.env.OBS_BENCH_NODE_ARGS === undefined ? "SIGKILL" : "SIGINT")
if (keptDir === undefined) rmSync(dir, { recursive: true, force: true })
