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

/** A /proc/PID/status figure in MiB: VmHWM (peak resident set), RssAnon (heap and other private memory). */
export const procStatusMiB = (pid: number | undefined, field: "VmHWM" | "RssAnon"): number => {
  if (pid === undefined) return Number.NaN
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return m?.[1] === undefined ? Number.NaN : Number(m[1]) / 1024
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
