/**
 * Wire codec vs JSON, same run, same 1,000-span batches: spans/s for encode + decode + validation.
 *
 *   npm run bench:codec        (builds packages/core, then runs this with Node 24)
 *
 * Fair comparison: both sides start from the same in-memory `Batch` frame and end with a fully
 * validated `Batch` (every field checked with the same checks, from the codec's own check module).
 * JSON gets its fastest bigint path (`BigInt.prototype.toJSON`, no replacer function) and carries ids
 * as hex strings, validated with `TraceContext.isTraceId`/`isSpanId`. Both produce bytes (UTF-8 for
 * JSON), as a WebSocket needs. Rounds alternate between the two and the median round is reported,
 * so background load hits both alike. Set MSGPACKR_NATIVE_ACCELERATION_DISABLED=true for pure JS.
 */
import { deepStrictEqual } from "node:assert"
import type { Span, SpanId, TraceId } from "@iii/core/Telemetry"
import * as TraceContext from "@iii/core/TraceContext"
import * as WireProtocol from "@iii/core/WireProtocol"
import { Either } from "effect"
// The codec's own check module, which the package does not export: its build, by path.
import * as Check from "../packages/core/dist/internal/wireChecks.js"
import { prng } from "../packages/core/test/fixtures/prng.ts"

const SPANS_PER_BATCH = 1000
const BATCHES = 8
const ROUNDS = 7
const ROUND_MS = 700

// ---------------------------------------------------------------------------------------------------
// realistic batches (fixed seed)

const rand = prng(42).next
const hexId = (bytes: number) => {
  let s = ""
  for (let i = 0; i < bytes * 2; i++) s += Math.floor(rand() * 16).toString(16)
  return s
}
const routes = ["/users/{id}", "/orders", "/orders/{id}/items", "/healthz", "/cart/{id}/checkout"]
const methods = ["GET", "GET", "GET", "POST", "PUT", "DELETE"]

const makeSpan = (i: number): Span => {
  const traceId = hexId(16) as TraceId
  const route = routes[i % routes.length] ?? "/"
  const method = methods[i % methods.length] ?? "GET"
  const status = rand() < 0.03 ? 503 : rand() < 0.05 ? 404 : 200
  const server = i % 2 === 0
  const span: { -readonly [K in keyof Span]: Span[K] } = {
    traceId,
    spanId: hexId(8) as SpanId,
    correlationId: i % 10 === 0 ? `order-${1_000_000 + i}` : traceId,
    service: "checkout",
    component: "api",
    composition: "shop",
    namespace: "default",
    pod: `checkout-7d9f8c6b5-${(i % 3).toString(36)}x2kq`,
    kind: server ? "server" : "client",
    name: `${method} ${route}`,
    startTimeUnixNano: 1_764_143_000_000_000_000n + BigInt(i) * 1_000_000n,
    durationNano: Math.floor(rand() * 250_000_000),
    http: {
      method,
      route,
      path: route.replace("{id}", String(Math.floor(rand() * 100_000))),
      statusCode: status
    },
    peerAddress: `10.42.${i % 7}.${i % 250}`,
    peerPort: server ? 40_000 + (i % 20_000) : 8080,
    error: server ? status >= 500 : status >= 400
  }
  if (i % 3 !== 0) span.parentSpanId = hexId(8) as SpanId
  if (i % 4 === 0)
    span.attributes = { "user_agent.original": "Mozilla/5.0 (X11; Linux x86_64)", "iii.retries": 0 }
  return span
}

const batches: ReadonlyArray<WireProtocol.Batch> = Array.from({ length: BATCHES }, (_, b) => ({
  type: "batch",
  seq: b + 1,
  spans: Array.from({ length: SPANS_PER_BATCH }, (_, i) => makeSpan(b * SPANS_PER_BATCH + i)),
  metrics: [],
  logs: []
}))

// ---------------------------------------------------------------------------------------------------
// JSON with the same validation

type Mutable<T> = { -readonly [K in keyof T]: T[K] }
const C = "invalid_batch" as const

Object.defineProperty(BigInt.prototype, "toJSON", {
  value(this: bigint) {
    return this.toString()
  }
})

const object = (v: unknown, path: string): Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)
    ? (v as Record<string, unknown>)
    : Check.fail(C, path, "expected an object")

const traceIdOf = (v: unknown, path: string): TraceId =>
  typeof v === "string" && TraceContext.isTraceId(v) ? v : Check.fail(C, path, "expected a trace id")
const spanIdOf = (v: unknown, path: string): SpanId =>
  typeof v === "string" && TraceContext.isSpanId(v) ? v : Check.fail(C, path, "expected a span id")
const unixNanoOf = (v: unknown, path: string): bigint =>
  typeof v === "string" && /^\d{1,20}$/.test(v) ? BigInt(v) : Check.unixNano(v, C, path)
const absent = (v: unknown) => v === undefined

const jsonSpan = (v: unknown): Span => {
  const s = object(v, "")
  const traceId = traceIdOf(s.traceId, "traceId")
  const span = { traceId, spanId: spanIdOf(s.spanId, "spanId") } as Mutable<Span>
  if (!absent(s.parentSpanId)) span.parentSpanId = spanIdOf(s.parentSpanId, "parentSpanId")
  span.correlationId = Check.boundedString(s.correlationId, 1, 256, C, "correlationId")
  span.service = Check.string(s.service, C, "service")
  if (!absent(s.component)) span.component = Check.string(s.component, C, "component")
  if (!absent(s.composition)) span.composition = Check.string(s.composition, C, "composition")
  if (!absent(s.namespace)) span.namespace = Check.string(s.namespace, C, "namespace")
  if (!absent(s.pod)) span.pod = Check.string(s.pod, C, "pod")
  span.kind =
    s.kind === "server" || s.kind === "client" ? s.kind : Check.fail(C, "kind", "expected server|client")
  span.name = Check.string(s.name, C, "name")
  span.startTimeUnixNano = unixNanoOf(s.startTimeUnixNano, "startTimeUnixNano")
  span.durationNano = Check.nonNegativeInteger(s.durationNano, C, "durationNano")
  if (!absent(s.http)) {
    const h = object(s.http, "http")
    const http: Mutable<NonNullable<Span["http"]>> = {
      method: Check.string(h.method, C, "http.method"),
      route: Check.string(h.route, C, "http.route")
    }
    if (!absent(h.path)) http.path = Check.string(h.path, C, "http.path")
    if (!absent(h.statusCode)) http.statusCode = Check.nonNegativeInteger(h.statusCode, C, "http.statusCode")
    span.http = http
  }
  if (!absent(s.peerAddress)) span.peerAddress = Check.string(s.peerAddress, C, "peerAddress")
  if (!absent(s.peerPort)) span.peerPort = Check.nonNegativeInteger(s.peerPort, C, "peerPort")
  span.error = Check.boolean(s.error, C, "error")
  if (!absent(s.attributes)) {
    const attributes = Check.attributes(s.attributes, C, "attributes")
    if (attributes !== undefined) span.attributes = attributes
  }
  return span
}

const jsonEncode = (frame: WireProtocol.Batch): Uint8Array => Buffer.from(JSON.stringify(frame))

const jsonDecode = (bytes: Uint8Array): WireProtocol.Batch => {
  const f = object(JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString()), "frame")
  if (f.type !== "batch") throw new Error("not a batch")
  const list = Check.array(f.spans, C, "spans")
  const spans = new Array<Span>(list.length)
  for (let i = 0; i < list.length; i++) {
    try {
      spans[i] = jsonSpan(list[i])
    } catch (e) {
      Check.rethrowWithin(e, `spans[${i}]`)
    }
  }
  Check.array(f.metrics, C, "metrics")
  Check.array(f.logs, C, "logs")
  return {
    type: "batch",
    seq: Check.nonNegativeInteger(f.seq, "malformed", "seq"),
    spans,
    metrics: [],
    logs: []
  }
}

const codecDecode = (bytes: Uint8Array): WireProtocol.Frame =>
  Either.getOrThrowWith(WireProtocol.decodeFrame(bytes), (e) => new Error(e.message))

// ---------------------------------------------------------------------------------------------------
// measurement

interface Contender {
  readonly name: string
  readonly roundTrip: (batch: WireProtocol.Batch) => unknown
  readonly encode: (batch: WireProtocol.Batch) => Uint8Array
  readonly decode: (bytes: Uint8Array) => unknown
}

const contenders: ReadonlyArray<Contender> = [
  {
    name: "wire codec (MessagePack)",
    roundTrip: (b) => codecDecode(WireProtocol.encodeFrame(b)),
    encode: WireProtocol.encodeFrame,
    decode: codecDecode
  },
  {
    name: "JSON + same validation",
    roundTrip: (b) => jsonDecode(jsonEncode(b)),
    encode: jsonEncode,
    decode: jsonDecode
  }
]

// Both must reproduce the input exactly, or the comparison means nothing.
for (const c of contenders) for (const b of batches) deepStrictEqual(c.roundTrip(b), b)

/** Spans per second over one round of at least `ROUND_MS`. */
const round = (work: (batch: WireProtocol.Batch) => unknown): number => {
  let spans = 0
  const start = performance.now()
  let elapsed = 0
  while (elapsed < ROUND_MS) {
    for (const b of batches) work(b)
    spans += BATCHES * SPANS_PER_BATCH
    elapsed = performance.now() - start
  }
  return (spans * 1000) / elapsed
}

const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0

const measure = (pick: (c: Contender) => (batch: WireProtocol.Batch) => unknown) => {
  for (const c of contenders) round(pick(c)) // warm-up
  const rates = contenders.map(() => [] as Array<number>)
  for (let r = 0; r < ROUNDS; r++)
    for (let i = 0; i < contenders.length; i++) rates[i]?.push(round(pick(contenders[i] as Contender)))
  return rates.map(median)
}

const encoded = batches.map((b) => contenders.map((c) => c.encode(b)))
let which = 0
const decodeOnly = (c: Contender) => {
  const index = contenders.indexOf(c)
  return () => c.decode(encoded[which++ % BATCHES]?.[index] ?? new Uint8Array())
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US").padStart(11)
const kib = (c: number) =>
  `${(encoded.reduce((sum, e) => sum + (e[c]?.length ?? 0), 0) / BATCHES / 1024).toFixed(0)} KiB`

console.log(
  `codec bench: ${BATCHES} batches x ${SPANS_PER_BATCH} spans, ${ROUNDS} alternating rounds (median), Node ${process.version}, ` +
    `msgpackr-extract native acceleration: ${WireProtocol.isNativeAccelerated() ? "on" : "off"}`
)
const total = measure((c) => c.roundTrip)
const encodeRates = measure((c) => c.encode)
const decodeRates = measure(decodeOnly)
console.log(
  `${"".padEnd(24)} ${"encode+decode".padStart(17)} ${"encode".padStart(17)} ${"decode+validate".padStart(17)}   batch size`
)
contenders.forEach((c, i) => {
  console.log(
    `${c.name.padEnd(24)} ${fmt(total[i] ?? 0)} sp/s ${fmt(encodeRates[i] ?? 0)} sp/s ${fmt(decodeRates[i] ?? 0)} sp/s   ${kib(i)}`
  )
})
const ratio = (total[0] ?? 0) / (total[1] ?? 1)
console.log(
  `ratio (codec / JSON, encode+decode): ${ratio.toFixed(2)}x  (target >= 1.3x: ${ratio >= 1.3 ? "met" : "NOT met"})`
)
