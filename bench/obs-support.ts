/**
 * Shared pieces of the obs benchmarks: spawning a node process, realistic span batches, and frame
 * templates that a client can turn into fresh unique batches without re-encoding (so the 2-core
 * machine's CPU goes to the node, not to the load generator).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readdirSync, readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { type Telemetry, WireProtocol } from "@iii/core"
import { Either } from "effect"
import WebSocket from "ws"

export { freePort } from "../packages/core/test/fixtures/freePort.ts"

export const percentile = (sorted: ReadonlyArray<number>, q: number): number =>
  sorted.length === 0
    ? Number.NaN
    : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN)

export const fmt = (n: number, digits = 0) => n.toLocaleString("en-US", { maximumFractionDigits: digits })

/** Starts `bench/obs-node.ts` on a data dir; resolves with its URL once it listens. */
export const spawnNode = (dataDir: string) =>
  new Promise<{ child: ChildProcess; url: string }>((resolve, reject) => {
    const script = fileURLToPath(new URL("./obs-node.ts", import.meta.url))
    // OBS_BENCH_NODE_ARGS: extra Node flags for the node process (e.g. --cpu-prof for profiling).
    const extra = (process.env.OBS_BENCH_NODE_ARGS ?? "").split(" ").filter((a) => a.length > 0)
    const child = spawn(process.execPath, ["--no-warnings", ...extra, script, dataDir], {
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString()
      const line = out.split("\n").find((l) => l.startsWith("{"))
      if (line !== undefined) resolve({ child, url: (JSON.parse(line) as { url: string }).url })
    })
    child.once("exit", (code) => reject(new Error(`obs node exited with ${code}`)))
  })

/** Major page faults of a process and its threads so far (pages it waited on the disk for), from /proc/PID/stat. */
export const majorFaults = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // After the command name, which may hold spaces and parentheses.
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[9]) // majflt
}

/** A /proc/PID/status figure in MiB: VmHWM (peak resident set), RssAnon (heap and other private memory). */
export const procStatusMiB = (pid: number | undefined, field: "VmHWM" | "RssAnon"): number => {
  if (pid === undefined) return Number.NaN
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m?.[1] === undefined ? Number.NaN : Number(m[1]) / 1024
}

/** CPU seconds (user + system) of a process and its threads so far, from /proc/PID/stat. */
export const cpuSeconds = (pid: number): number => {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
  // After the command name, which may hold spaces and parentheses.
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  return (Number(fields[11]) + Number(fields[12])) / 100 // utime, stime in clock ticks (USER_HZ 100)
}

/**
 * Per thread of a process, keyed by "tid comm": seconds on a CPU, and seconds runnable but waiting
 * for one (from /proc/PID/task/TID/schedstat; the latter shows contention from other processes).
 */
export const threadCpuSeconds = (pid: number | undefined): Map<string, { run: number; wait: number }> => {
  const out = new Map<string, { run: number; wait: number }>()
  if (pid === undefined) return out
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ").map(Number)
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim()
      out.set(`${tid} ${comm}`, { run: (run ?? 0) / 1e9, wait: (wait ?? 0) / 1e9 })
    } catch {
      // the thread ended between listing and reading
    }
  }
  return out
}

const services = ["checkout", "payments", "users", "catalog", "search"]
const routes = ["/cart/{id}", "/pay", "/users/{id}", "/items", "/items/{id}", "/search", "/login", "/health"]
const hex = (n: number | bigint, width: number) => n.toString(16).padStart(width, "0")

/** Marker in the first 8 bytes of every template trace id; the last 8 bytes are rewritten per batch. */
const marker = "f0e1d2c3b4a59687"

/** A realistic span: HTTP server span of one of 5 services and 8 routes, 2% errors, a few attributes. */
export const makeSpan = (i: number, startNano: bigint, trace = i): Telemetry.Span => {
  const status = i % 50 === 0 ? 503 : i % 17 === 0 ? 404 : 200
  const route = routes[i % routes.length] ?? "/"
  return {
    traceId: `${marker}${hex(trace + 1, 16)}` as Telemetry.TraceId,
    spanId: hex(i + 1, 16) as Telemetry.SpanId,
    ...(i % 3 !== 0 && { parentSpanId: hex(i + 100_000, 16) as Telemetry.SpanId }),
    correlationId: `${marker}${hex(trace + 1, 16)}`,
    service: services[i % services.length] ?? "svc",
    component: services[i % services.length] ?? "svc",
    composition: "shop",
    namespace: "default",
    pod: `pod-${i % 7}`,
    kind: "server",
    name: `GET ${route}`,
    startTimeUnixNano: startNano + BigInt(i) * 1000n,
    durationNano: 200_000 + ((i * 7919) % 250) * 1_000_000,
    http: { method: "GET", route, path: route.replace("{id}", String(i)), statusCode: status },
    peerAddress: "10.0.3.17",
    peerPort: 40_000 + (i % 1000),
    error: status >= 500,
    attributes: { "http.user_agent": "bench/1.0", "iii.bench.batch_index": i }
  }
}

/**
 * An encoded batch frame whose seq, trace ids and start times can be rewritten in place:
 * `stamp(seq, startNano)` returns a fresh frame with that seq, new trace ids, and span i starting at
 * `startNano + i µs` (like an agent's batch of requests just served; the template's own start time
 * when omitted), byte-identical in size and shape to what the wire codec would produce for such a
 * batch. Trace ids are what iii's agents mint (`TraceContext.newTraceId`: the time in ms, then 10
 * random bytes); with `randomTraceIds` all 16 bytes are random, as ids from other tracers are.
 */
export const frameTemplate = (spansPerBatch: number, startNano: bigint) => {
  const seqMarker = 0x7fffffff
  const spans = Array.from({ length: spansPerBatch }, (_, i) => makeSpan(i, startNano))
  const bytes = Buffer.from(
    WireProtocol.encodeFrame({ type: "batch", seq: seqMarker, spans, metrics: [], logs: [] })
  )
  const seqAt = bytes.indexOf(Buffer.from([0xce, 0x7f, 0xff, 0xff, 0xff]))
  const traceMarker = Buffer.from(marker, "hex")
  const traceAt: Array<number> = []
  for (let at = bytes.indexOf(traceMarker); at >= 0; at = bytes.indexOf(traceMarker, at + 1))
    traceAt.push(at + 8)
  // Start times are msgpack int64s (0xd3 + 8 bytes big-endian).
  const startAt = spans.map((s) => {
    const encoded = Buffer.alloc(9)
    encoded[0] = 0xd3
    encoded.writeBigInt64BE(s.startTimeUnixNano, 1)
    return bytes.indexOf(encoded) + 1
  })
  if (seqAt < 0 || traceAt.length !== spansPerBatch || startAt.includes(0))
    throw new Error("frame template markers not found")
  return {
    bytes: bytes.length,
    stamp: (seq: number, batchStartNano?: bigint, randomTraceIds = false): Buffer => {
      const frame = Buffer.from(bytes)
      frame.writeUInt32BE(seq, seqAt + 1)
      const random = randomBytes(16 * traceAt.length)
      const ms = batchStartNano === undefined ? Date.now() : Number(batchStartNano / 1_000_000n)
      for (let i = 0; i < traceAt.length; i++) {
        // traceAt points past the template id's first 8 bytes: the id starts 8 bytes earlier.
        const at = (traceAt[i] ?? 8) - 8
        if (randomTraceIds) random.copy(frame, at, 16 * i, 16 * i + 16)
        else {
          frame.writeUIntBE(ms, at, 6)
          random.copy(frame, at + 6, 16 * i, 16 * i + 10)
        }
      }
      if (batchStartNano !== undefined)
        for (let i = 0; i < startAt.length; i++)
          frame.writeBigInt64BE(batchStartNano + BigInt(i) * 1000n, startAt[i] ?? 0)
      return frame
    }
  }
}

export interface LoadOptions {
  /** Node URLs; connection i goes to `urls[i % urls.length]`. */
  readonly urls: ReadonlyArray<string>
  readonly connections: number
  readonly spansPerBatch: number
  /** Batches each connection keeps in flight. */
  readonly window: number
  readonly seconds: number
  readonly warmupSeconds: number
  /** Send the template's start times unchanged instead of the send time (see obs-ingest.ts). */
  readonly fixedStart?: boolean
  readonly randomTraceIds?: boolean
  /** Called when the measured interval starts and when it ends (sample CPU there). */
  readonly onMeasureStart?: () => void
  readonly onMeasureEnd?: () => void
}

export interface LoadResult {
  /** Spans acknowledged in the measured interval. */
  readonly acked: number
  readonly measuredSeconds: number
  /** Ack latencies (ms) of batches sent and acknowledged in the measured interval, sorted. */
  readonly latencies: ReadonlyArray<number>
  /** Spans acknowledged per 10 s since the start. */
  readonly perTenSeconds: ReadonlyArray<number>
  /** Batches answered with an error frame (e.g. `overloaded`: no write quorum). */
  readonly refused: number
}

/**
 * The ingest load of the obs benches: `connections` WebSockets, each keeping `window` batches of
 * `spansPerBatch` spans in flight (the next one sent when one is acknowledged), stamped from one
 * encoded template (`frameTemplate`) so the client spends almost no CPU.
 */
export const ingestLoad = async (o: LoadOptions): Promise<LoadResult> => {
  const template = frameTemplate(o.spansPerBatch, BigInt(Date.now()) * 1_000_000n)
  const startedAt = performance.now()
  const measureFrom = startedAt + o.warmupSeconds * 1000
  const stopAt = startedAt + o.seconds * 1000
  const perTenSeconds: Array<number> = []
  const latencies: Array<number> = []
  let acked = 0
  let refused = 0
  if (o.onMeasureStart !== undefined) setTimeout(o.onMeasureStart, measureFrom - performance.now()).unref()
  if (o.onMeasureEnd !== undefined) setTimeout(o.onMeasureEnd, stopAt - performance.now()).unref()
  const connection = (index: number) =>
    new Promise<void>((resolve, reject) => {
      const url = o.urls[index % o.urls.length] ?? ""
      const ws = new WebSocket(`${url.replace("http", "ws")}/v1/ingest`, { perMessageDeflate: false })
      const sentAt = new Map<number, number>()
      let seq = 0
      const sendNext = () => {
        seq++
        sentAt.set(seq, performance.now())
        ws.send(
          template.stamp(
            seq,
            o.fixedStart
              ? undefined
              : BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n,
            o.randomTraceIds ?? false
          )
        )
      }
      ws.on("open", () =>
        ws.send(
          WireProtocol.encodeFrame({
            type: "hello",
            version: WireProtocol.PROTOCOL_VERSION,
            agent: { id: `bench-${index}-${process.pid}` }
          })
        )
      )
      ws.on("message", (data: Buffer) => {
        const frame = WireProtocol.decodeFrame(data)
        if (Either.isLeft(frame)) return reject(frame.left)
        const f = frame.right
        if (f.type === "welcome") for (let i = 0; i < o.window; i++) sendNext()
        else if (f.type === "ack" || (f.type === "error" && f.seq !== undefined && !f.fatal)) {
          const now = performance.now()
          const start = sentAt.get(f.seq ?? 0) ?? now
          sentAt.delete(f.seq ?? 0)
          if (f.type === "ack") {
            if (start >= measureFrom && now <= stopAt) {
              acked += o.spansPerBatch
              latencies.push(now - start)
            }
            const slot = Math.floor((now - startedAt) / 10_000)
            perTenSeconds[slot] = (perTenSeconds[slot] ?? 0) + o.spansPerBatch
          } else refused++
          if (now < stopAt) sendNext()
          else if (sentAt.size === 0) {
            ws.close()
            resolve()
          }
        } else if (f.type === "error") reject(new Error(`${f.code}: ${f.message}`))
      })
      ws.on("error", reject)
    })
  await Promise.all(Array.from({ length: o.connections }, (_, i) => connection(i)))
  return {
    acked,
    measuredSeconds: (stopAt - measureFrom) / 1000,
    latencies: latencies.sort((a, b) => a - b),
    perTenSeconds: perTenSeconds.map((n) => n / 10),
    refused
  }
}
