/**
 * obs cluster ingest: the ingest load of bench:ingest (4 connections × 500-span batches, 8 in flight
 * each) against, in one run,
 *   1. one plain node (no ring: the reference `bench:ingest` measures),
 *   2. one node with the ring router, replication 1,
 *   3. three nodes with replication 3, the connections spread over them (each batch acknowledged
 *      once 2 of the 3 owners have it durably).
 * Each phase runs OBS_BENCH_SECONDS (default 30) after a 5 s warm-up, on fresh data directories; the
 * nodes are `iii obs` processes (built CLI). Prints acknowledged spans/s, ack latency, and the CPU
 * every node process used per 100,000 acknowledged spans (all their threads, from /proc), then the
 * targets: replication 3 costs ≤ 3.5× replication 1 per acknowledged span, and 3 nodes acknowledge
 * ≥ 100,000 spans/s.
 *
 *   npm run bench:ring-ingest
 *   OBS_BENCH_SECONDS=15 npm run bench:ring-ingest
 */
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { loadavg, tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { fmt, freePort, ingestLoad, percentile, threadCpuSeconds } from "./obs-support.ts"

const SECONDS = Number(process.env.OBS_BENCH_SECONDS ?? 30)
const WARMUP = 5
const CONNECTIONS = 4
const WINDOW = Number(process.env.OBS_BENCH_WINDOW ?? 8)
const SPANS_PER_BATCH = 500

const cli = fileURLToPath(new URL("../packages/cli/dist/bin.js", import.meta.url))
const root = mkdtempSync(join(tmpdir(), "iii-bench-ring-"))

/** Starts `iii obs` with `args`; resolves once it listens. */
const startNode = (port: number, args: ReadonlyArray<string>) =>
  new Promise<ChildProcess>((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [
        cli,
        "obs",
        "--data",
        join(root, `node-${port}`),
        "--host",
        "127.0.0.1",
        "--port",
        String(port),
        "--retention",
        "36500d",
        // Several nodes on one machine: OTLP/gRPC's default port would be shared.
        "--otlp-grpc-port",
        "0",
        ...args
      ],
      { stdio: ["ignore", "pipe", "pipe"] }
    )
    let out = ""
    const onData = (d: Buffer) => {
      out += d.toString()
      if (out.includes(`listening on 127.0.0.1:${port}`)) resolve(child)
    }
    child.stdout?.on("data", onData)
    child.stderr?.on("data", onData)
    child.once("exit", (code) => reject(new Error(`obs node exited (${code}):\n${out}`)))
  })

const cpuOf = (pids: ReadonlyArray<number | undefined>) =>
  pids.map((pid) => Array.from(threadCpuSeconds(pid).values()).reduce((n, t) => n + t.run, 0))

interface Phase {
  readonly name: string
  readonly rate: number
  readonly cpuPer100k: number
  readonly clientPer100k: number
}

const phase = async (
  name: string,
  nodes: number,
  args: (address: string, peers: string) => ReadonlyArray<string>
) => {
  const ports = await Promise.all(Array.from({ length: nodes }, freePort))
  const addresses = ports.map((p) => `127.0.0.1:${p}`)
  const children = await Promise.all(
    ports.map((p, i) => startNode(p, args(addresses[i] ?? "", addresses.join(","))))
  )
  // Peers connect within a heartbeat or two.
  if (nodes > 1) await new Promise((r) => setTimeout(r, 3_000))
  const pids = children.map((c) => c.pid)
  let cpuStart: Array<number> = []
  let cpuEnd: Array<number> = []
  let clientStart = process.cpuUsage()
  let client = { user: 0, system: 0 }
  const load = await ingestLoad({
    urls: addresses.map((a) => `http://${a}`),
    connections: CONNECTIONS,
    spansPerBatch: SPANS_PER_BATCH,
    window: WINDOW,
    seconds: SECONDS + WARMUP,
    warmupSeconds: WARMUP,
    onMeasureStart: () => {
      cpuStart = cpuOf(pids)
      clientStart = process.cpuUsage()
    },
    onMeasureEnd: () => {
      cpuEnd = cpuOf(pids)
      client = process.cpuUsage(clientStart)
    }
  })
  for (const c of children) c.kill("SIGKILL")
  const perNode = cpuEnd.map((end, i) => end - (cpuStart[i] ?? 0))
  const cpu = perNode.reduce((a, b) => a + b, 0)
  const rate = load.acked / load.measuredSeconds
  const per100k = (seconds: number) => (seconds * 100_000) / Math.max(1, load.acked)
  const result: Phase = {
    name,
    rate,
    cpuPer100k: per100k(cpu),
    clientPer100k: per100k((client.user + client.system) / 1e6)
  }
  console.log(`${name}`)
  console.log(
    `  acknowledged       ${fmt(rate)} spans/s (${fmt(load.acked)} spans in ${fmt(load.measuredSeconds, 1)} s)`
  )
  console.log(
    `  ack latency        p50 ${fmt(percentile(load.latencies, 0.5), 1)} ms, p99 ${fmt(percentile(load.latencies, 0.99), 1)} ms; ${load.refused} batches refused (no quorum)`
  )
  console.log(
    `  node CPU           ${fmt(result.cpuPer100k, 2)} CPU-seconds per 100k acknowledged spans (${fmt(result.cpuPer100k * 10, 1)} µs per span); ` +
      `per node ${perNode.map((s) => `${fmt((100 * s) / load.measuredSeconds)}%`).join(", ")} of a core`
  )
  console.log(`  client CPU         ${fmt(result.clientPer100k, 2)} CPU-seconds per 100k spans`)
  console.log(`  per 10 s           ${load.perTenSeconds.map((n) => fmt(n)).join(", ")} spans/s`)
  return result
}

console.log(
  `obs ring ingest: ${CONNECTIONS} connections × ${SPANS_PER_BATCH}-span batches, ${WINDOW} in flight each, ` +
    `${SECONDS} s per phase after ${WARMUP} s warm-up; load average ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`
)
try {
  const plain = await phase("1 node, no ring (plain iii obs)", 1, () => [])
  const one = await phase("1 node, ring router, replication 1", 1, (self, peers) => [
    "--advertise",
    self,
    "--peers",
    peers,
    "--replication",
    "1"
  ])
  const three = await phase("3 nodes, replication 3 (write quorum 2)", 3, (self, peers) => [
    "--advertise",
    self,
    "--peers",
    peers,
    "--replication",
    "3"
  ])
  const ratio = three.cpuPer100k / one.cpuPer100k
  console.log("summary")
  console.log(
    `  CPU per acknowledged span, RF 3 / RF 1: ${fmt(ratio, 2)}× (replication alone would be 3×: routing and quorum add ${fmt(100 * (ratio / 3 - 1), 1)}%); ` +
      `ring router RF 1 / plain node: ${fmt(one.cpuPer100k / plain.cpuPer100k, 2)}×`
  )
  console.log(
    `  targets            RF 3 ≤ 3.5× RF 1 per span: ${ratio <= 3.5 ? "met" : "NOT met"}; ` +
      `3 nodes ≥ 100,000 spans/s: ${three.rate >= 100_000 ? "met" : "NOT met"} (${fmt(three.rate)})`
  )
  console.log(
    `  load average after ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`
  )
} finally {
  rmSync(root, { recursive: true, force: true })
}
