/**
 * OTLP ingest side by side, one run: the same telemetrygen load (OpenTelemetry's Go load generator)
 * sent over OTLP to iii obs, to Jaeger v2 with its badger store, and to Jaeger with its memory store
 * (the ceiling: no disk), one after the other, each server in a fresh temp dir. For each: spans/s
 * stored over the measured interval (from the server's own counters: obs's
 * `iii_obs_spans_ingested_total`, counted after the durable commit that answers the request;
 * Jaeger's `otelcol_exporter_sent_spans_total`, spans its storage exporter wrote, and
 * `otelcol_receiver_accepted_spans_total`, spans its receiver acknowledged), and CPU-seconds per
 * 100k spans of the server process (utime + stime from /proc/PID/stat over the same interval).
 * Target: iii ≥ 5× Jaeger-badger's rate at ≤ 1/3 of its CPU per span.
 *
 *   npm run bench:otlp-peers
 *   OTLP_PEERS_SECONDS=20 OTLP_PEERS_PROTOCOL=http npm run bench:otlp-peers
 *
 * Settings: OTLP_PEERS_SECONDS (measured seconds per server, default 30, after 5 s of warm-up),
 * OTLP_PEERS_PROTOCOL (grpc, the default, or http: protobuf), OTLP_PEERS_ONLY (a comma list of iii,
 * jaeger-badger, jaeger-memory), and the load, the same for every server (chosen on the 2 shared
 * cores, 2026-12-03):
 * - OTLP_PEERS_CLIENTS (telemetrygen processes, default 16) × OTLP_PEERS_BATCH (spans per export
 *   request, default 2048; the Go SDK's default is 512) are the spans in flight: one process has one
 *   export in flight at a time (the Go SDK's batch span processor exports serially and drops what
 *   does not fit its queue). A server that answers after a durable commit (iii) needs more in flight
 *   than one that answers once the spans are queued in memory (Jaeger): 16 × 512 held iii to
 *   8,192 spans / its ~0.6 s answer. The SDK's queue (OTEL_BSP_MAX_QUEUE_SIZE) is set to 4 batches,
 *   at least its default 2048, so a batch is never capped by the queue.
 * - OTLP_PEERS_WORKERS (generating goroutines per process, default 5) × OTLP_PEERS_RATE (spans/s
 *   each worker offers, default 600): 48,000 spans/s offered in all, above what any of the three
 *   stores here. telemetrygen's limiter waits before every span (parent and child alike) with a
 *   burst of 1, so one worker asked for 10,000 spans/s makes only ~1,500 (each wait oversleeps):
 *   with 8 processes of one such worker, Jaeger's memory store took 13,212 spans/s, with 20 workers
 *   of 500 each, 35,474. The generators' CPU grows with the spans they make, kept or dropped (and
 *   unthrottled they spend a core each making spans their queues drop), CPU the servers then lack on
 *   2 cores: the offer is kept within ~1.5× the best store's rate.
 * The load: telemetrygen traces, a client root and one server child each, resource and span
 * attributes as the OTLP ingest test sends. The generators' CPU is printed too (they share the 2
 * cores with the server).
 * telemetrygen and Jaeger are built on first use into ~/.cache/iii/otel (scripts/otel-tools.sh;
 * Jaeger takes minutes). Jaeger runs its default pipeline (OTLP receiver, batch processor, storage
 * exporter); badger as Jaeger configures it (writes not synced: obs syncs each commit).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { cpuSeconds, fmt, freePort, threadCpuSeconds } from "./obs-support.ts"

const SECONDS = Number(process.env.OTLP_PEERS_SECONDS ?? 30)
const WARMUP_SECONDS = 5
const PROTOCOL = process.env.OTLP_PEERS_PROTOCOL === "http" ? "http" : "grpc"
const CLIENTS = Number(process.env.OTLP_PEERS_CLIENTS ?? 16)
const WORKERS = Number(process.env.OTLP_PEERS_WORKERS ?? 5)
const RATE = Number(process.env.OTLP_PEERS_RATE ?? 600)
const BATCH = Number(process.env.OTLP_PEERS_BATCH ?? 2048)
const ONLY = (process.env.OTLP_PEERS_ONLY ?? "iii,jaeger-badger,jaeger-memory").split(",")

const repo = fileURLToPath(new URL("..", import.meta.url))
const tools = Object.fromEntries(
  execFileSync("bash", [join(repo, "scripts/otel-tools.sh"), "telemetrygen", "jaeger"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"]
  })
    .trim()
    .split("\n")
    .map((line) => line.replace(/^export /, "").split("="))
) as { III_TELEMETRYGEN: string; III_JAEGER: string }

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** The sum of a Prometheus counter's samples (all label sets) in a /metrics text. */
const counter = (text: string, name: string): number => {
  let sum = 0
  for (const line of text.split("\n"))
    if (line.startsWith(name) && (line[name.length] === " " || line[name.length] === "{"))
      sum += Number(line.slice(line.lastIndexOf(" ") + 1))
  return sum
}

interface Server {
  readonly name: string
  readonly child: ChildProcess
  /** Where telemetrygen sends (host:port). */
  readonly endpoint: string
  /** Spans stored and acknowledged so far. */
  readonly counts: () => Promise<{ stored: number; acknowledged: number }>
  readonly dir: string
}

const waitFor = async (what: string, child: ChildProcess, ready: () => Promise<boolean>) => {
  const deadline = Date.now() + 60_000
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`)
    if (await ready().catch(() => false)) return
    await sleep(200)
  }
  throw new Error(`${what} did not start within 60 s`)
}

const metricsText = async (url: string) => (await fetch(url)).text()

// The servers' own logs (badger's level dumps, gRPC warnings at shutdown) go to files, not between
// the figures; the header says where.
const logs = mkdtempSync(join(tmpdir(), "iii-bench-otlp-logs-"))
const logTo = (name: string) => openSync(join(logs, `${name}.log`), "a")

const startIii = async (): Promise<Server> => {
  const dir = mkdtempSync(join(tmpdir(), "iii-bench-otlp-iii-"))
  const [port, grpcPort] = [await freePort(), await freePort()]
  // OTLP_PEERS_NODE_ARGS: extra Node flags for obs (e.g. --cpu-prof --cpu-prof-dir=DIR).
  const extra = (process.env.OTLP_PEERS_NODE_ARGS ?? "").split(" ").filter((a) => a.length > 0)
  const child = spawn(
    process.execPath,
    [
      ...extra,
      join(repo, "packages/cli/dist/bin.js"),
      "obs",
      "--data",
      join(dir, "data"),
      "--host",
      "127.0.0.1",
      "--port",
      String(port),
      "--otlp-grpc-port",
      String(grpcPort)
    ],
    { stdio: ["ignore", "ignore", logTo("iii-obs")] }
  )
  const metrics = `http://127.0.0.1:${port}/metrics`
  await waitFor("iii obs", child, async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).ok)
  return {
    name: "iii obs",
    child,
    dir,
    endpoint: `127.0.0.1:${PROTOCOL === "grpc" ? grpcPort : port}`,
    counts: async () => {
      const stored = counter(await metricsText(metrics), "iii_obs_spans_ingested_total")
      return { stored, acknowledged: stored }
    }
  }
}

const startJaeger = async (store: "badger" | "memory"): Promise<Server> => {
  const dir = mkdtempSync(join(tmpdir(), `iii-bench-otlp-jaeger-${store}-`))
  const [grpc, http, metricsPort, queryHttp, queryGrpc, health] = await Promise.all(
    Array.from({ length: 6 }, freePort)
  )
  const backend =
    store === "badger"
      ? `badger:
          directories: { keys: ${join(dir, "keys")}, values: ${join(dir, "values")} }
          ephemeral: false
          ttl: { spans: 48h }`
      : "memory: { max_traces: 100000 }"
  // Jaeger's own config-badger.yaml (cmd/jaeger), on free ports and without the archive store and UI.
  writeFileSync(
    join(dir, "config.yaml"),
    `service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull: { exporter: { prometheus: { host: 127.0.0.1, port: ${metricsPort} } } }
    logs: { level: warn }
extensions:
  healthcheckv2:
    use_v2: true
    http: { endpoint: 127.0.0.1:${health} }
  jaeger_query:
    storage: { traces: store }
    http: { endpoint: 127.0.0.1:${queryHttp} }
    grpc: { endpoint: 127.0.0.1:${queryGrpc} }
  jaeger_storage:
    backends:
      store:
        ${backend}
receivers:
  otlp:
    protocols:
      grpc: { endpoint: 127.0.0.1:${grpc} }
      http: { endpoint: 127.0.0.1:${http} }
processors:
  batch:
exporters:
  jaeger_storage_exporter:
    trace_storage: store
`
  )
  const child = spawn(tools.III_JAEGER, ["--config", join(dir, "config.yaml")], {
    stdio: ["ignore", logTo(`jaeger-${store}`), logTo(`jaeger-${store}`)],
    cwd: dir
  })
  const metrics = `http://127.0.0.1:${metricsPort}/metrics`
  await waitFor(`jaeger (${store})`, child, async () => (await fetch(metrics)).ok)
  return {
    name: `Jaeger v2, ${store}`,
    child,
    dir,
    endpoint: `127.0.0.1:${PROTOCOL === "grpc" ? grpc : http}`,
    counts: async () => {
      const text = await metricsText(metrics)
      return {
        stored: counter(text, "otelcol_exporter_sent_spans_total"),
        acknowledged: counter(text, "otelcol_receiver_accepted_spans_total")
      }
    }
  }
}

const stop = async (server: Server) => {
  if (server.child.exitCode === null) {
    const exited = new Promise((resolve) => server.child.once("exit", resolve))
    server.child.kill("SIGTERM")
    await Promise.race([exited, sleep(15_000).then(() => server.child.kill("SIGKILL"))])
  }
  rmSync(server.dir, { recursive: true, force: true })
}

interface Result {
  readonly name: string
  readonly storedPerSec: number
  readonly acknowledgedPerSec: number
  readonly cpuPer100k: number
  readonly cpuCores: number
  readonly generatorCores: number
  /** The server's busiest thread names, with their cores (which part limits it). */
  readonly threads: string
}

/** CPU seconds per thread name (threads of one name summed) between two `threadCpuSeconds` reads. */
const threadsBetween = (
  before: ReturnType<typeof threadCpuSeconds>,
  after: ReturnType<typeof threadCpuSeconds>,
  secs: number
): string => {
  const byName = new Map<string, number>()
  for (const [key, { run }] of after) {
    const name = key.slice(key.indexOf(" ") + 1)
    byName.set(name, (byName.get(name) ?? 0) + run - (before.get(key)?.run ?? 0))
  }
  return [...byName]
    .sort((a, b) => b[1] - a[1])
    .slice(0, 4)
    .map(([name, cpu]) => `${name} ${fmt(cpu / secs, 2)}`)
    .join(", ")
}

const measure = async (server: Server): Promise<Result> => {
  const generators = Array.from({ length: CLIENTS }, () =>
    spawn(
      tools.III_TELEMETRYGEN,
      [
        "traces",
        "--otlp-endpoint",
        server.endpoint,
        "--otlp-insecure",
        ...(PROTOCOL === "http" ? ["--otlp-http"] : []),
        "--service",
        "bench",
        "--otlp-attributes",
        'k8s.namespace.name="shop"',
        "--telemetry-attributes",
        'order.id="o-42"',
        "--workers",
        String(WORKERS),
        "--batch-size",
        String(BATCH),
        "--child-spans",
        "1",
        "--rate",
        String(RATE),
        "--allow-export-failures",
        "--duration",
        `${WARMUP_SECONDS + SECONDS + 5}s`
      ],
      {
        stdio: ["ignore", "ignore", "ignore"],
        env: { ...process.env, OTEL_BSP_MAX_QUEUE_SIZE: String(Math.max(2048, 4 * BATCH)) }
      }
    )
  )
  const generatorCpu = () => generators.reduce((sum, g) => sum + cpuSeconds(g.pid ?? 0), 0)
  try {
    const pid = server.child.pid ?? 0
    await sleep(WARMUP_SECONDS * 1000)
    const snapshot = async () =>
      [
        await server.counts(),
        threadCpuSeconds(pid),
        cpuSeconds(pid),
        generatorCpu(),
        performance.now()
      ] as const
    const [c0, th0, cpu0, gen0, t0] = await snapshot()
    await sleep(SECONDS * 1000)
    const [c1, th1, cpu1, gen1, t1] = await snapshot()
    const exited = generators.find((g) => g.exitCode !== null)
    if (exited !== undefined) throw new Error(`telemetrygen exited early (${exited.exitCode})`)
    const secs = (t1 - t0) / 1000
    const stored = c1.stored - c0.stored
    return {
      name: server.name,
      storedPerSec: stored / secs,
      acknowledgedPerSec: (c1.acknowledged - c0.acknowledged) / secs,
      cpuPer100k: stored > 0 ? ((cpu1 - cpu0) / stored) * 100_000 : Number.NaN,
      cpuCores: (cpu1 - cpu0) / secs,
      generatorCores: (gen1 - gen0) / secs,
      threads: threadsBetween(th0, th1, secs)
    }
  } finally {
    for (const g of generators) g.kill("SIGKILL")
  }
}

const servers: Record<string, () => Promise<Server>> = {
  iii: startIii,
  "jaeger-badger": () => startJaeger("badger"),
  "jaeger-memory": () => startJaeger("memory")
}

console.log(
  `OTLP peers: ${CLIENTS} telemetrygen processes of ${WORKERS} workers offering ${fmt(RATE)} spans/s each (${fmt(CLIENTS * WORKERS * RATE)} in all), ${BATCH}-span requests over OTLP/${PROTOCOL}, ` +
    `${SECONDS} s measured per server after ${WARMUP_SECONDS} s warm-up; servers' logs in ${logs}`
)
const results: Array<Result> = []
for (const key of ONLY) {
  const start = servers[key]
  if (start === undefined) throw new Error(`OTLP_PEERS_ONLY: unknown server ${key}`)
  const server = await start()
  try {
    const r = await measure(server)
    results.push(r)
    console.log(
      `  ${r.name.padEnd(18)} ${fmt(r.storedPerSec).padStart(8)} spans/s stored, ${fmt(r.acknowledgedPerSec).padStart(8)} acknowledged, ` +
        `${fmt(r.cpuPer100k, 2)} CPU-s per 100k spans (server ${fmt(r.cpuCores, 2)} cores, telemetrygen ${fmt(r.generatorCores, 2)})\n` +
        `    busiest threads (cores): ${r.threads}`
    )
  } finally {
    await stop(server)
  }
}
const iii = results.find((r) => r.name === "iii obs")
const badger = results.find((r) => r.name === "Jaeger v2, badger")
if (iii !== undefined && badger !== undefined) {
  const rate = iii.storedPerSec / badger.storedPerSec
  const cpu = iii.cpuPer100k / badger.cpuPer100k
  console.log(
    `iii vs Jaeger-badger: ${fmt(rate, 2)}× the rate (target ≥ 5), ${fmt(cpu, 2)}× the CPU per span (target ≤ 0.33)`
  )
}
