/**
 * What the eBPF capture alone costs a Node HTTP server: capture off vs on (programs attached, the
 * server's pid traced, every batch decoded), interleaved rounds, medians.
 *
 *   npm run bench:ebpf-capture            (root; needs the addon: npm run build:native)
 *   ROUNDS=8 SECONDS=4 RATE=2000 npm run bench:ebpf-capture   (the defaults)
 *   TRACE=0 npm run bench:ebpf-capture    (programs attached, server not traced: the host-wide cost)
 *   SYSCALLS=0 npm run bench:ebpf-capture (skip the per-syscall part)
 *   HTTP=0 npm run bench:ebpf-capture     (the per-syscall part only)
 *   WORK_US=100 npm run bench:ebpf-capture (the handler burns 100 µs of CPU per request, like real work)
 *   OBJECT=old.bpf.o npm run bench:ebpf-capture (load this BPF object instead of the addon's: compare designs)
 *
 * The server runs pinned to CPU 0; wrk and this process (the capture's reader thread and decoder)
 * to CPU 1, so throughput shows what the traced server itself loses. Saturation: wrk, 1 thread,
 * 50 keep-alive connections. Fixed rate: an open-loop generator (bench/fixtures/fixed-rate.ts, its
 * own process on CPU 1) at RATE req/s (default 2,000), p50/p99 from its own timings. Prints figures;
 * asserts nothing.
 *
 * First, per-syscall cost: bench/fixtures/syscall-loop.c (gcc) times write+read pairs on a socket
 * and on a pipe with the programs detached, attached but the process untraced, and traced; with
 * kernel.bpf_stats_enabled on, the kernel's own run time per program invocation is printed too.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { mkdtempSync, readFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import * as EbpfCapture from "@iii/agent/EbpfCapture"
import { Effect, Stream } from "effect"

const rounds = Number(process.env.ROUNDS ?? 8)
const seconds = Number(process.env.SECONDS ?? 4)
const rate = Number(process.env.RATE ?? 2000)
/** TRACE=0: attach the programs but trace nothing (the cost every process on the host pays). */
const traceServer = process.env.TRACE !== "0"
const object = process.env.OBJECT === undefined ? {} : { objectPath: process.env.OBJECT }

const serverSource = `
const http = require("node:http")
const body = Buffer.from(JSON.stringify({ ok: true, message: "hello from the benchmark server" }))
const workUs = Number(process.env.WORK_US ?? 0)
const server = http.createServer((req, res) => {
  // WORK_US: the handler's own CPU time per request (0: a bare hello-world, the worst case).
  const until = process.hrtime.bigint() + BigInt(workUs * 1000)
  while (workUs > 0 && process.hrtime.bigint() < until) {}
  res.writeHead(200, { "content-type": "application/json", "content-length": body.length })
  res.end(body)
})
server.keepAliveTimeout = 60000
server.listen(0, "127.0.0.1", () => console.log("listening " + server.address().port))
`

let serverPid = 0

const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1
    ? (sorted[middle] ?? 0)
    : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

const startServer = async (): Promise<{ child: ChildProcess; port: number }> => {
  const child = spawn("taskset", ["-c", "0", process.execPath, "-e", serverSource], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const port = await new Promise<number>((resolve) => {
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      const match = /^listening (\d+)$/.exec(line)
      if (match) resolve(Number(match[1]))
    })
  })
  return { child, port }
}

interface WrkResult {
  rps: number
  p50: number
  p99: number
  requests: number
  /** The server's own CPU time (user + system) per request, µs: what tracing costs it, free of the
   * other processes' noise that throughput suffers from. */
  serverCpuUs: number
}

/** utime + stime of a process, in clock ticks (USER_HZ = 100 on Linux). */
const cpuTicks = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? []
  return Number(fields[11]) + Number(fields[12])
}

const toMs = (value: string): number => {
  const match = /^([\d.]+)(us|ms|s)$/.exec(value)
  if (!match) return Number.NaN
  const n = Number(match[1])
  return match[2] === "us" ? n / 1000 : match[2] === "s" ? n * 1000 : n
}

const wrk = (port: number, duration: number): WrkResult => {
  const ticks = cpuTicks(serverPid)
  const out = execFileSync(
    "taskset",
    ["-c", "1", "wrk", "-t1", "-c50", `-d${duration}s`, "--latency", `http://127.0.0.1:${port}/`],
    { encoding: "utf8" }
  )
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    p50: toMs(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ""),
    p99: toMs(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ""),
    requests: Number(/(\d+) requests in/.exec(out)?.[1]),
    serverCpuUs: ((cpuTicks(serverPid) - ticks) * 10_000) / Number(/(\d+) requests in/.exec(out)?.[1])
  }
}

/** Open loop at `rate` req/s from bench/fixtures/fixed-rate.ts, pinned to CPU 1, in its own process. */
const fixedRate = (port: number, duration: number): Promise<{ p50: number; p99: number; sent: number }> =>
  new Promise((resolve, reject) => {
    const script = new URL("./fixtures/fixed-rate.ts", import.meta.url).pathname
    const child = spawn(
      "taskset",
      ["-c", "1", process.execPath, script, String(port), String(rate), String(duration)],
      {
        stdio: ["ignore", "pipe", "inherit"]
      }
    )
    let output = ""
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString()
    })
    child.on("exit", () => {
      try {
        resolve(JSON.parse(output) as { p50: number; p99: number; sent: number })
      } catch (error) {
        reject(error)
      }
    })
  })

interface Captured {
  events: number
  dropped: number
  cpuMs: number
  rssMb: number
  startMs: number
}

/** Runs `load` with the capture attached to `pid`, every batch decoded and counted. */
const withCapture = <A>(pid: number, load: () => Promise<A>): Promise<{ result: A; captured: Captured }> =>
  Effect.gen(function* () {
    const t0 = performance.now()
    const capture = yield* EbpfCapture.start({ ...object, pids: traceServer ? [pid] : [] })
    const startMs = performance.now() - t0
    let events = 0
    const consumer = yield* Effect.fork(
      Stream.runForEach(capture.batches, (batch) =>
        Effect.sync(() => {
          for (const _ of batch) events++
        })
      )
    )
    const cpu0 = process.cpuUsage()
    const result = yield* Effect.promise(load)
    yield* Effect.sleep("100 millis")
    const cpu = process.cpuUsage(cpu0)
    const counters = yield* capture.counters
    yield* Effect.yieldNow()
    void consumer
    return {
      result,
      captured: {
        events,
        dropped: counters.dropped,
        cpuMs: (cpu.user + cpu.system) / 1000,
        rssMb: process.memoryUsage().rss / 1024 / 1024,
        startMs
      }
    }
  }).pipe(Effect.scoped, Effect.runPromise)

/** Runs the C syscall loop once; `mode` says whether the capture is attached and traces it. */
const syscallLoop = (binary: string, mode: "off" | "untraced" | "traced") =>
  Effect.gen(function* () {
    const child = spawn("taskset", ["-c", "0", binary, "200000"], { stdio: ["pipe", "pipe", "inherit"] })
    if (mode !== "off")
      yield* EbpfCapture.start({ ...object, pids: mode === "traced" ? [child.pid ?? 0] : [] })
    const output = yield* Effect.promise(
      () =>
        new Promise<string>((resolve) => {
          let text = ""
          child.stdout?.on("data", (chunk: Buffer) => {
            text += chunk.toString()
          })
          child.on("exit", () => resolve(text))
          child.stdin?.write("go\n")
        })
    )
    const [, socket = "NaN", pipe = "NaN"] = /socket ([\d.]+) pipe ([\d.]+)/.exec(output) ?? []
    return { socket: Number(socket), pipe: Number(pipe) }
  }).pipe(Effect.scoped, Effect.runPromise)

/** bpftool's view of the iii programs: average ns per run (needs kernel.bpf_stats_enabled). */
const programStats = (): Map<string, { runs: number; ns: number }> => {
  const stats = new Map<string, { runs: number; ns: number }>()
  try {
    const programs = JSON.parse(
      execFileSync("bpftool", ["-j", "prog", "show"], { encoding: "utf8" })
    ) as Array<{
      name?: string
      run_cnt?: number
      run_time_ns?: number
    }>
    for (const p of programs) {
      if (p.name?.startsWith("iii_") && p.run_cnt !== undefined && p.run_time_ns !== undefined) {
        const previous = stats.get(p.name) ?? { runs: 0, ns: 0 }
        stats.set(p.name, { runs: previous.runs + p.run_cnt, ns: previous.ns + p.run_time_ns })
      }
    }
  } catch {
    // No bpftool: the figures from the loop itself still stand.
  }
  return stats
}

const syscallCost = async () => {
  const binary = join(mkdtempSync(join(tmpdir(), "iii-bench-")), "syscall-loop")
  try {
    execFileSync("gcc", ["-O2", "-o", binary, new URL("./fixtures/syscall-loop.c", import.meta.url).pathname])
  } catch {
    console.log("syscall cost: skipped (gcc not available)")
    return
  }
  const results = {
    off: [] as Array<{ socket: number; pipe: number }>,
    untraced: [] as Array<{ socket: number; pipe: number }>,
    traced: [] as Array<{ socket: number; pipe: number }>
  }
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["off", "untraced", "traced"] as const)
      results[mode].push(await syscallLoop(binary, mode))
  }
  console.log("syscall cost (ns per write+read pair, 64 B, median of rounds, each the best of 5 x 200k):")
  for (const mode of ["off", "untraced", "traced"] as const) {
    console.log(
      `  ${mode.padEnd(8)} socket ${median(results[mode].map((r) => r.socket)).toFixed(0)} ns, pipe ${median(results[mode].map((r) => r.pipe)).toFixed(0)} ns`
    )
  }
  let statsWas = "0"
  try {
    statsWas = execFileSync("sysctl", ["-n", "kernel.bpf_stats_enabled"], { encoding: "utf8" }).trim()
    execFileSync("sysctl", ["-qw", "kernel.bpf_stats_enabled=1"])
  } catch {
    return
  }
  try {
    const before = programStats()
    await Effect.gen(function* () {
      const child = spawn("taskset", ["-c", "0", binary, "200000"], { stdio: ["pipe", "ignore", "inherit"] })
      yield* EbpfCapture.start({ ...object, pids: [child.pid ?? 0] })
      const after = yield* Effect.promise(
        () =>
          new Promise<Map<string, { runs: number; ns: number }>>((resolve) => {
            child.on("exit", () => resolve(programStats()))
            child.stdin?.write("go\n")
          })
      )
      console.log(
        "kernel time per program run while tracing the loop (bpf_stats; includes other processes' hits):"
      )
      for (const name of ["iii_enter_write", "iii_exit_write", "iii_enter_read", "iii_exit_read"]) {
        const a = after.get(name)
        const b = before.get(name) ?? { runs: 0, ns: 0 }
        if (a !== undefined && a.runs > b.runs)
          console.log(`  ${name.padEnd(16)} ${((a.ns - b.ns) / (a.runs - b.runs)).toFixed(0)} ns`)
      }
    }).pipe(Effect.scoped, Effect.runPromise)
  } finally {
    execFileSync("sysctl", ["-qw", `kernel.bpf_stats_enabled=${statsWas}`])
  }
}

const main = async () => {
  const availability = Effect.runSync(EbpfCapture.isAvailable)
  if (!availability.available) {
    console.log(`ebpf-capture bench: eBPF capture unavailable: ${availability.reasons.join("; ")}`)
    return
  }
  execFileSync("taskset", ["-p", "-c", "1", String(process.pid)], { stdio: "ignore" })
  if (process.env.SYSCALLS !== "0") await syscallCost()
  if (process.env.HTTP === "0") return
  const { child, port } = await startServer()
  serverPid = child.pid ?? 0
  try {
    wrk(port, 2) // warm-up
    const saturation = { off: [] as Array<WrkResult>, ebpf: [] as Array<WrkResult> }
    const captures: Array<Captured> = []
    const fixed = {
      off: [] as Array<number>,
      ebpf: [] as Array<number>,
      offP50: [] as Array<number>,
      ebpfP50: [] as Array<number>
    }
    const fixedDrops: Array<number> = []
    for (let round = 1; round <= rounds; round++) {
      // Alternate which mode goes first so a drifting machine does not favour one.
      const offFirst = round % 2 === 1
      const off = offFirst ? wrk(port, seconds) : undefined
      const on = await withCapture(child.pid ?? 0, async () => wrk(port, seconds))
      saturation.off.push(off ?? wrk(port, seconds))
      saturation.ebpf.push(on.result)
      captures.push(on.captured)
      const offFixedFirst = offFirst ? await fixedRate(port, seconds) : undefined
      const onFixed = await withCapture(child.pid ?? 0, () => fixedRate(port, seconds))
      const offFixed = offFixedFirst ?? (await fixedRate(port, seconds))
      fixed.off.push(offFixed.p99)
      fixed.offP50.push(offFixed.p50)
      fixed.ebpf.push(onFixed.result.p99)
      fixed.ebpfP50.push(onFixed.result.p50)
      fixedDrops.push(onFixed.captured.dropped)
      const last = saturation.ebpf.at(-1)
      console.log(
        `round ${round}: off ${saturation.off.at(-1)?.rps.toFixed(0)} req/s, ebpf ${last?.rps.toFixed(0)} req/s; ` +
          `${rate} req/s p99 off ${offFixed.p99.toFixed(2)} ms, ebpf ${onFixed.result.p99.toFixed(2)} ms`
      )
    }
    const offRps = median(saturation.off.map((r) => r.rps))
    const ebpfRps = median(saturation.ebpf.map((r) => r.rps))
    const requests = median(saturation.ebpf.map((r) => r.requests))
    const cpuMs = median(captures.map((c) => c.cpuMs))
    console.log(
      `\nebpf-capture bench (${rounds} rounds x ${seconds}s, medians; server on CPU 0 with WORK_US=${process.env.WORK_US ?? 0}, wrk + capture on CPU 1)`
    )
    console.log(
      `saturation  off:  ${offRps.toFixed(0)} req/s  p50 ${median(saturation.off.map((r) => r.p50)).toFixed(2)} ms  p99 ${median(saturation.off.map((r) => r.p99)).toFixed(2)} ms`
    )
    console.log(
      `saturation  ebpf: ${ebpfRps.toFixed(0)} req/s  p50 ${median(saturation.ebpf.map((r) => r.p50)).toFixed(2)} ms  p99 ${median(saturation.ebpf.map((r) => r.p99)).toFixed(2)} ms`
    )
    const offCpu = median(saturation.off.map((r) => r.serverCpuUs))
    const ebpfCpu = median(saturation.ebpf.map((r) => r.serverCpuUs))
    console.log(
      `server CPU per request: off ${offCpu.toFixed(1)} µs, ebpf ${ebpfCpu.toFixed(1)} µs ` +
        `(+${(((ebpfCpu - offCpu) / offCpu) * 100).toFixed(2)}%: the throughput a CPU-bound server loses)`
    )
    // Each round's on/off runs are adjacent in time, so their ratio cancels most of the machine's drift.
    const pairedLoss =
      1 - median(saturation.ebpf.map((r, i) => r.rps / (saturation.off[i]?.rps ?? Number.NaN)))
    console.log(
      `throughput loss with eBPF capture: ${(((offRps - ebpfRps) / offRps) * 100).toFixed(2)}% (medians), ` +
        `${(pairedLoss * 100).toFixed(2)}% (median of per-round ratios)`
    )
    console.log(
      `${rate} req/s p50 off ${median(fixed.offP50).toFixed(2)} ms, ebpf ${median(fixed.ebpfP50).toFixed(2)} ms`
    )
    const offP99 = median(fixed.off)
    const ebpfP99 = median(fixed.ebpf)
    console.log(
      `${rate} req/s p99 off ${offP99.toFixed(2)} ms, ebpf ${ebpfP99.toFixed(2)} ms (overhead ${(((ebpfP99 - offP99) / offP99) * 100).toFixed(2)}%)`
    )
    console.log(`events dropped at ${rate} req/s (max over rounds): ${Math.max(...fixedDrops)}`)
    console.log(
      `events per request: ${(median(captures.map((c) => c.events)) / requests).toFixed(2)}; dropped at saturation (max): ${Math.max(...captures.map((c) => c.dropped))}`
    )
    console.log(
      `capture CPU (reader thread + decoding): ${((cpuMs / 1000 / requests) * 1000).toFixed(4)} CPU-s per 1,000 requests; RSS ${Math.max(...captures.map((c) => c.rssMb)).toFixed(0)} MB; start (load + attach) ${median(captures.map((c) => c.startMs)).toFixed(0)} ms`
    )
  } finally {
    child.kill("SIGKILL")
  }
}

await main()
