/**
 * What the agent costs the service it traces: agent off vs eBPF vs proxy, interleaved in one run.
 *
 *   npm run bench:agent-overhead      (root for the eBPF column; ROUNDS=5 SECONDS=5 by default)
 *
 * Setup: a Node.js JSON service pinned to CPU 0 (`taskset -c 0`); the load generator (wrk from
 * Debian), the agent and this script pinned to CPU 1, so throughput shows what the traced service
 * itself loses. Telemetry goes to an in-process obs stand-in that acks every batch. Each round runs
 * every mode (order rotated per round); per mode: 1 s warm-up, then a fixed 2,000 req/s open-loop
 * phase (bench/fixtures/fixed-rate.ts in its own process on CPU 1; latency measured from each
 * request's scheduled time, so queueing counts), then saturation (wrk, 32 connections). Reported: medians over rounds of throughput and p50/p99 latency, agent
 * CPU-seconds per 1,000 requests, peak agent RSS, requests dropped (with their reasons), and the
 * service's own CPU time per request at saturation (what tracing costs the service, kernel capture
 * included; on a shared machine steadier than throughput, which other load also moves).
 * Per round and agent mode, an accounting line: the requests the service answered while the agent
 * ran (it counts them), the spans obs received, the drops the agent counted, and what is left
 * unaccounted (issue #17: zero unless requests were in flight when the agent stopped).
 * In proxy mode the load goes through the proxy's port, as clients would.
 */
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process"
import { readFileSync } from "node:fs"
import type { AddressInfo } from "node:net"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import * as EbpfCapture from "@iii/agent/EbpfCapture"
import * as WireProtocol from "@iii/core/WireProtocol"
import { Effect, Either } from "effect"
import { WebSocketServer } from "ws"

const ROUNDS = Number(process.env.ROUNDS ?? 5)
const SECONDS = Number(process.env.SECONDS ?? 5)
const FIXED_RATE = 2000
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url))
const CLK_TCK = 100
const execFileAsync = promisify(execFile)

// This script and everything it starts run on CPU 1 unless pinned elsewhere.
execFileSync("taskset", ["-cp", "1", String(process.pid)], { stdio: "ignore" })

type Mode = "off" | "ebpf" | "proxy"
const availability = await Effect.runPromise(EbpfCapture.isAvailable)
const modes: Array<Mode> = availability.available ? ["off", "ebpf", "proxy"] : ["off", "proxy"]
if (!availability.available) console.log(`eBPF column skipped: ${availability.reasons.join("; ")}`)

// ---------------------------------------------------------------------------------------------------
// obs stand-in: acks every batch, counts spans

/**
 * A batch frame's seq and span count, read from its first bytes without decoding it: the stand-in
 * shares CPU 1 with the agent and wrk, and a real obs node runs elsewhere, so it must cost next to
 * nothing. Layout (packages/core WireProtocol): fixarray(8), version, type 3, seq (msgpack uint),
 * then the span ids blob (bin8/16/32) of 32 bytes per span.
 */
const peekBatch = (frame: Buffer): { seq: number; spans: number } | undefined => {
  if (frame[0] !== 0x98 || frame[1] !== WireProtocol.PROTOCOL_VERSION || frame[2] !== 3) return undefined
  const uint = (at: number): [value: number, next: number] => {
    const head = frame[at] ?? 0
    if (head < 0x80) return [head, at + 1]
    if (head === 0xcc) return [frame.readUInt8(at + 1), at + 2]
    if (head === 0xcd) return [frame.readUInt16BE(at + 1), at + 3]
    if (head === 0xce) return [frame.readUInt32BE(at + 1), at + 5]
    return [Number(frame.readBigUInt64BE(at + 1)), at + 9]
  }
  const [seq, idsAt] = uint(3)
  const bin = frame[idsAt]
  const idBytes =
    bin === 0xc4
      ? frame.readUInt8(idsAt + 1)
      : bin === 0xc5
        ? frame.readUInt16BE(idsAt + 1)
        : frame.readUInt32BE(idsAt + 1)
  return { seq, spans: idBytes / 32 }
}

/** Spans stored per agent id. */
const spansReceived = new Map<string, number>()
const obs = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v1/ingest" })
await new Promise<void>((resolve) => obs.once("listening", () => resolve()))
obs.on("connection", (socket) => {
  let agentId = ""
  socket.on("message", (data: Buffer) => {
    const batch = peekBatch(data)
    if (batch !== undefined) {
      spansReceived.set(agentId, (spansReceived.get(agentId) ?? 0) + batch.spans)
      socket.send(WireProtocol.encodeFrame({ type: "ack", seq: batch.seq }))
      return
    }
    const frame = WireProtocol.decodeFrame(data)
    if (Either.isRight(frame) && frame.right.type === "hello") {
      agentId = frame.right.agent.id
      socket.send(
        WireProtocol.encodeFrame({ type: "welcome", version: WireProtocol.PROTOCOL_VERSION, node: "bench" })
      )
    }
  })
})
const obsUrl = `ws://127.0.0.1:${(obs.address() as AddressInfo).port}`

// ---------------------------------------------------------------------------------------------------
// processes

const freePort = async () => {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  const port = (server.address() as AddressInfo).port
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}

/** Starts a process and resolves once a stdout line starts with `readyPrefix`. */
const startProcess = (
  args: ReadonlyArray<string>,
  readyPrefix: string,
  env: NodeJS.ProcessEnv = process.env
) =>
  new Promise<{ child: ChildProcess; lines: Array<string> }>((resolve, reject) => {
    const [file, ...rest] = args
    const child = spawn(file ?? "", rest, { stdio: ["ignore", "pipe", "inherit"], env })
    const lines: Array<string> = []
    let buffered = ""
    child.stdout?.on("data", (chunk: Buffer) => {
      buffered += chunk.toString()
      let nl = buffered.indexOf("\n")
      while (nl !== -1) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        lines.push(line)
        if (line.startsWith(readyPrefix)) resolve({ child, lines })
        nl = buffered.indexOf("\n")
      }
    })
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited (${code}) before ready`)))
  })

const stop = (child: ChildProcess) =>
  new Promise<void>((resolve) => {
    if (child.exitCode !== null) return resolve()
    child.once("exit", () => resolve())
    child.kill("SIGTERM")
  })

const cpuSeconds = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}
const statusMb = (pid: number, field: string): number => {
  const match = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, "utf8"))
  return Number(match?.[1] ?? 0) / 1024
}

// ---------------------------------------------------------------------------------------------------
// load

const parseDuration = (text: string): number => {
  const match = /([\d.]+)(us|ms|s)/.exec(text)
  if (match === null) return Number.NaN
  const value = Number(match[1])
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value
}

/**
 * Saturation with wrk: requests/s, p50 and p99 in ms, requests made. Asynchronous: the obs stand-in
 * in this process must keep acknowledging batches meanwhile, as a real obs node would (blocked, it
 * left every batch of the phase unacknowledged in the agent's memory).
 */
const wrk = async (port: number, seconds: number, connections: number) => {
  const { stdout: out } = await execFileAsync(
    "taskset",
    [
      "-c",
      "1",
      "wrk",
      "-t1",
      `-c${connections}`,
      `-d${seconds}s`,
      "--latency",
      `http://127.0.0.1:${port}/users/42`
    ],
    { encoding: "utf8" }
  )
  const line = (label: string) => out.split("\n").find((l) => l.trim().startsWith(label)) ?? ""
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN),
    p50: parseDuration(line("50%").trim().split(/\s+/)[1] ?? ""),
    p99: parseDuration(line("99%").trim().split(/\s+/)[1] ?? ""),
    requests: Number(/(\d+) requests in/.exec(out)?.[1] ?? 0)
  }
}

/**
 * The open-loop fixed-rate load (bench/fixtures/fixed-rate.ts), in a process of its own on CPU 1: in
 * this process its timers would wait behind the obs stand-in receiving the agent's batches.
 */
const fixedRate = (port: number, rate: number, seconds: number) =>
  new Promise<{ p50: number; p99: number; requests: number; errors: number }>((resolve, reject) => {
    const child = spawn(
      "taskset",
      [
        "-c",
        "1",
        process.execPath,
        here("./fixtures/fixed-rate.ts"),
        String(port),
        String(rate),
        String(seconds),
        "/users/42"
      ],
      { stdio: ["ignore", "pipe", "inherit"] }
    )
    let output = ""
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.on("exit", () => {
      try {
        const result = JSON.parse(output) as { p50: number; p99: number; sent: number; failed: number }
        resolve({
          p50: result.p50,
          p99: result.p99,
          requests: result.sent - result.failed,
          errors: result.failed
        })
      } catch (error) {
        reject(error)
      }
    })
  })

// ---------------------------------------------------------------------------------------------------
// one measurement

interface Result {
  mode: Mode
  satRps: number
  /** The service's CPU busy share during saturation, and its CPU time per request. */
  serviceBusy: number
  serviceUsPerRequest: number
  satP50: number
  satP99: number
  fixedP50: number
  fixedP99: number
  cpuPer1kFixed: number
  cpuPer1kSat: number
  rssMb: number
  anonMb: number
  droppedFixed: number
  droppedTotal: number
  accounting: Accounting | undefined
}

/** Where every request the service answered while the agent ran went (issue #17). */
interface Accounting {
  requests: number
  spans: number
  dropped: number
  unaccounted: number
  reasons: string
}

const appPort = await freePort()
const app = await startProcess(
  ["taskset", "-c", "0", process.execPath, here("./support/bench-app.mjs")],
  "listening",
  {
    ...process.env,
    PORT: String(appPort)
  }
)

interface RunnerStats {
  spans: number
  requestsDropped: { ring_full: number; unparsed: number; shutdown: number }
  spansLostInExport: number
  ringFullRecords: number
  unrecordedRecords: number
  abandonedRecords: number
  spansSealed: number
}

const lastStats = (lines: Array<string>) => {
  const line = [...lines].reverse().find((l) => l.startsWith("stats "))
  return line === undefined ? undefined : (JSON.parse(line.slice(6)) as RunnerStats)
}

/** Requests the agent did not turn into spans that reached obs: dropped before, or in export. */
const droppedRequests = (stats: RunnerStats | undefined) =>
  stats === undefined
    ? 0
    : stats.requestsDropped.ring_full +
      stats.requestsDropped.unparsed +
      stats.requestsDropped.shutdown +
      stats.spansLostInExport

/** How many requests the service has answered so far (it counts them; SIGUSR2 asks). */
const answered = async (): Promise<number> => {
  const seen = app.lines.length
  app.child.kill("SIGUSR2")
  for (let i = 0; i < 500; i++) {
    const line = app.lines.slice(seen).find((l) => l.startsWith("answered "))
    if (line !== undefined) return Number(line.slice("answered ".length))
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  throw new Error("the service did not say how many requests it answered")
}

const measure = async (mode: Mode): Promise<Result> => {
  let agent: { child: ChildProcess; lines: Array<string> } | undefined
  let port = appPort
  const runner = here("./support/agent-runner.mjs")
  // The memory settings the controller gives the agent sidecar (packages/controller Render.ts,
  // agentNodeOptions and agentMallocArenaMax; packages/agent README, "Memory").
  const node = [process.execPath, "--max-semi-space-size=2", "--max-old-space-size=64"]
  const env = { ...process.env, MALLOC_ARENA_MAX: "1" }
  if (mode === "ebpf") {
    agent = await startProcess(
      ["taskset", "-c", "1", ...node, runner, "ebpf", obsUrl, String(app.child.pid)],
      "ready",
      env
    )
  } else if (mode === "proxy") {
    port = await freePort()
    agent = await startProcess(
      ["taskset", "-c", "1", ...node, runner, "proxy", obsUrl, String(port), String(appPort)],
      "ready",
      env
    )
  }
  const pid = agent?.child.pid
  const answeredBefore = await answered()
  await wrk(port, 1, 8)
  const cpu0 = pid === undefined ? 0 : cpuSeconds(pid)
  const fixed = await fixedRate(port, FIXED_RATE, SECONDS)
  const cpu1 = pid === undefined ? 0 : cpuSeconds(pid)
  let droppedFixed = 0
  if (agent !== undefined) {
    agent.child.kill("SIGUSR2")
    await new Promise((resolve) => setTimeout(resolve, 300))
    droppedFixed = droppedRequests(lastStats(agent.lines))
  }
  const cpu2 = pid === undefined ? 0 : cpuSeconds(pid)
  const appPid = app.child.pid ?? 0
  const appCpu0 = cpuSeconds(appPid)
  const satStarted = process.hrtime.bigint()
  const sat = await wrk(port, SECONDS, 32)
  const cpu3 = pid === undefined ? 0 : cpuSeconds(pid)
  const appCpu = cpuSeconds(appPid) - appCpu0
  const satSeconds = Number(process.hrtime.bigint() - satStarted) / 1e9
  // Peak RSS, and the private (anonymous) part of the current RSS: the rest is file pages shared with
  // every Node.js process (the node binary, the addon).
  const rssMb = pid === undefined ? 0 : statusMb(pid, "VmHWM")
  const anonMb = pid === undefined ? 0 : statusMb(pid, "RssAnon")
  let droppedTotal = 0
  let accounting: Accounting | undefined
  if (agent !== undefined) {
    await stop(agent.child)
    const final = lastStats(agent.lines)
    droppedTotal = droppedRequests(final)
    const requests = (await answered()) - answeredBefore
    const ready = agent.lines.find((line) => line.startsWith("ready "))
    const id = ready === undefined ? "" : (JSON.parse(ready.slice(6)) as { id: string }).id
    const spans = spansReceived.get(id) ?? 0
    const drops = final?.requestsDropped
    accounting = {
      requests,
      spans,
      dropped: droppedTotal,
      unaccounted: requests - spans - droppedTotal,
      reasons:
        `ring full ${drops?.ring_full ?? 0}, unparsed ${drops?.unparsed ?? 0}, shutdown ${drops?.shutdown ?? 0}, ` +
        `export ${final?.spansLostInExport ?? 0}; kernel: ${final?.ringFullRecords ?? 0} records lost to a full ring ` +
        `(${final?.unrecordedRecords ?? 0} unattributed), ${final?.abandonedRecords ?? 0} abandoned at stop`
    }
  }
  return {
    mode,
    satRps: sat.rps,
    serviceBusy: appCpu / satSeconds,
    serviceUsPerRequest: (appCpu * 1e6) / sat.requests,
    satP50: sat.p50,
    satP99: sat.p99,
    fixedP50: fixed.p50,
    fixedP99: fixed.p99,
    cpuPer1kFixed: pid === undefined ? 0 : (cpu1 - cpu0) / (fixed.requests / 1000),
    cpuPer1kSat: pid === undefined ? 0 : (cpu3 - cpu2) / (sat.requests / 1000),
    rssMb,
    anonMb,
    droppedFixed,
    droppedTotal,
    accounting
  }
}

const results: Array<Result> = []
for (let round = 0; round < ROUNDS; round++) {
  const order = modes.map((_, i) => modes[(i + round) % modes.length] as Mode)
  for (const mode of order) {
    const result = await measure(mode)
    results.push(result)
    console.log(
      `round ${round + 1} ${mode.padEnd(5)} sat ${result.satRps.toFixed(0)} req/s p99 ${result.satP99.toFixed(2)} ms | ` +
        `@${FIXED_RATE}/s p50 ${result.fixedP50.toFixed(2)} p99 ${result.fixedP99.toFixed(2)} ms | ` +
        `agent ${result.cpuPer1kSat.toFixed(4)} CPU-s/1k, ${result.rssMb.toFixed(0)} MB, dropped ${result.droppedTotal} | ` +
        `service ${(result.serviceBusy * 100).toFixed(0)}% busy, ${result.serviceUsPerRequest.toFixed(1)} µs/req`
    )
    const a = result.accounting
    if (a !== undefined)
      console.log(
        `${mode} accounting: requests ${a.requests}, spans ${a.spans}, dropped ${a.dropped}, unaccounted ${a.unaccounted} (${a.reasons})`
      )
  }
}
await stop(app.child)
obs.close()

const median = (values: Array<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}
const of = (mode: Mode, pick: (r: Result) => number) =>
  median(results.filter((r) => r.mode === mode).map(pick))
/** Median over rounds of each round's mode/off ratio: robust to load that shifts between rounds. */
const ratio = (mode: Mode, pick: (r: Result) => number) =>
  median(
    Array.from({ length: ROUNDS }, (_, round) => {
      const rows = results.slice(round * modes.length, (round + 1) * modes.length)
      const base = rows.find((r) => r.mode === "off")
      const row = rows.find((r) => r.mode === mode)
      return base === undefined || row === undefined ? Number.NaN : pick(row) / pick(base)
    })
  )
const off = { rps: of("off", (r) => r.satRps), p99: of("off", (r) => r.fixedP99) }

console.log(`\nmedians over ${ROUNDS} rounds (service on CPU 0; wrk, agent and this script on CPU 1):`)
console.log(
  "mode   sat req/s  loss    sat p50  sat p99  | 2k/s p50  2k/s p99  p99 +%  | agent CPU-s/1k req (2k/s, sat)  peak RSS (anon)  dropped (2k/s, all)  unaccounted"
)
for (const mode of modes) {
  const rps = of(mode, (r) => r.satRps)
  const p99 = of(mode, (r) => r.fixedP99)
  const rows = results.filter((r) => r.mode === mode)
  console.log(
    [
      mode.padEnd(6),
      rps.toFixed(0).padStart(9),
      mode === "off" ? "      -" : `${(((off.rps - rps) / off.rps) * 100).toFixed(1).padStart(6)}%`,
      `${of(mode, (r) => r.satP50)
        .toFixed(2)
        .padStart(7)}ms`,
      `${of(mode, (r) => r.satP99)
        .toFixed(2)
        .padStart(7)}ms |`,
      `${of(mode, (r) => r.fixedP50)
        .toFixed(2)
        .padStart(7)}ms`,
      `${p99.toFixed(2).padStart(7)}ms`,
      mode === "off" ? "      - |" : `${(((p99 - off.p99) / off.p99) * 100).toFixed(1).padStart(6)}% |`,
      mode === "off"
        ? "                             -"
        : `${of(mode, (r) => r.cpuPer1kFixed).toFixed(4)}, ${of(mode, (r) => r.cpuPer1kSat).toFixed(4)}`.padStart(
            30
          ),
      mode === "off"
        ? "               -"
        : `${Math.max(...rows.map((r) => r.rssMb)).toFixed(0)} MB (${Math.max(...rows.map((r) => r.anonMb)).toFixed(0)})`.padStart(
            16
          ),
      `${rows.reduce((s, r) => s + r.droppedFixed, 0)}, ${rows.reduce((s, r) => s + r.droppedTotal, 0)}`.padStart(
        20
      ),
      String(rows.reduce((s, r) => s + (r.accounting?.unaccounted ?? 0), 0)).padStart(11)
    ].join("  ")
  )
}
for (const mode of modes) {
  if (mode === "off") continue
  console.log(
    `${mode}: median per-round throughput loss ${((1 - ratio(mode, (r) => r.satRps)) * 100).toFixed(1)}%, ` +
      `p99 overhead at ${FIXED_RATE} req/s ${((ratio(mode, (r) => r.fixedP99) - 1) * 100).toFixed(1)}%`
  )
}
// What the traced service itself pays: its CPU time per request at saturation (kernel capture included),
// and how busy it was (below ~100% the load generator, not the service, set the pace).
for (const mode of modes) {
  console.log(
    `${mode}: service ${of(mode, (r) => r.serviceUsPerRequest).toFixed(1)} CPU-µs per request, ` +
      `${(of(mode, (r) => r.serviceBusy) * 100).toFixed(0)}% busy at saturation`
  )
}
