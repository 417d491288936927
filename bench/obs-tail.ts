/**
 * obs live tail under load: paced ingest at 50,000 spans/s (4 connections, 500-span batches), first
 * with no tail subscribers, then with 10, in one run. Prints commit-to-subscriber latency (from the
 * node's `committedAt` stamp to the subscriber's receipt, same clock) and ingest with vs without
 * subscribers (achieved rate, ack latency), and the node's CPU per span in both phases: at a paced
 * rate the node keeps up either way, so the CPU the subscribers add is what shows how much a node
 * running at its limit would slow down. Targets: p99 ≤ 50 ms, ingest slowed by ≤ 10%.
 *
 *   npm run bench:tail                    (builds packages/obs, then runs this with Node 24)
 *   OBS_BENCH_SECONDS=10 npm run bench:tail   (seconds per phase; default 20)
 *   OBS_BENCH_RATE=20000 npm run bench:tail   (ingest rate; default 50,000 spans/s)
 *
 * Spans start at send time (see bench:ingest). Subscribers: 7 unfiltered JSON, 1 unfiltered MessagePack, 2 filtered (`status=5xx`, `service=checkout`);
 * they run in a process of their own (`obs-tail-subscribers.ts`), as real tail clients would.
 * JSON subscribers read `committedAt` and `count` from the head of each message without decoding the
 * spans, so the load generator stays light; MessagePack ones decode everything.
 */
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { WireProtocol } from "@iii/core"
import { Either } from "effect"
import WebSocket from "ws"
import { fmt, frameTemplate, percentile, spawnNode, threadCpuSeconds } from "./obs-support.ts"

const SECONDS = Number(process.env.OBS_BENCH_SECONDS ?? 20)
const RATE = Number(process.env.OBS_BENCH_RATE ?? 50_000)
const CONNECTIONS = 4
const SPANS_PER_BATCH = 500
const MAX_OUTSTANDING = 32
const dir = mkdtempSync(join(tmpdir(), "iii-bench-tail-"))
const node = await spawnNode(join(dir, "node"))
const template = frameTemplate(SPANS_PER_BATCH, BigInt(Date.now()) * 1_000_000n)
const wsUrl = node.url.replace("http", "ws")

interface Phase {
  acked: number
  skipped: number
  ackLatencies: Array<number>
  /** Seconds the node's threads spent on a CPU during the phase. */
  nodeCpu: number
}

const nodeCpuSeconds = () =>
  Array.from(threadCpuSeconds(node.child.pid).values()).reduce((n, t) => n + t.run, 0)

/** A phase of paced ingest, with the node's CPU over it. */
const measure = async (seconds: number, phase: Phase, offset: number) => {
  const before = nodeCpuSeconds()
  await ingest(seconds, phase, offset)
  phase.nodeCpu = nodeCpuSeconds() - before
}

/** Paced ingest: each connection sends one batch every CONNECTIONS × 500 / RATE seconds. */
const ingest = (seconds: number, phase: Phase, offset: number) =>
  Promise.all(
    Array.from(
      { length: CONNECTIONS },
      (_, index) =>
        new Promise<void>((resolve, reject) => {
          const ws = new WebSocket(`${wsUrl}/v1/ingest`, { perMessageDeflate: false })
          const sentAt = new Map<number, number>()
          let seq = 0
          let timer: NodeJS.Timeout | undefined
          const started = performance.now()
          const intervalMs = (CONNECTIONS * SPANS_PER_BATCH * 1000) / RATE
          let due = 0
          const tick = () => {
            const elapsed = performance.now() - started
            if (elapsed >= seconds * 1000) {
              clearInterval(timer)
              if (sentAt.size === 0) ws.close()
              return
            }
            // Catch up on every batch due by now (timers are coarse), as an open-loop generator does.
            while (due * intervalMs <= elapsed) {
              due++
              if (sentAt.size >= MAX_OUTSTANDING) {
                phase.skipped++
                continue
              }
              seq++
              sentAt.set(seq, performance.now())
              ws.send(
                template.stamp(
                  seq,
                  BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e3)) * 1000n
                )
              )
            }
          }
          ws.on("open", () =>
            ws.send(
              WireProtocol.encodeFrame({
                type: "hello",
                version: WireProtocol.PROTOCOL_VERSION,
                agent: { id: `tail-bench-${offset}-${index}` }
              })
            )
          )
          ws.on("message", (data: Buffer) => {
            const frame = WireProtocol.decodeFrame(data)
            if (Either.isLeft(frame)) return reject(frame.left)
            const f = frame.right
            if (f.type === "welcome") timer = setInterval(tick, 2)
            else if (f.type === "ack") {
              const start = sentAt.get(f.seq)
              sentAt.delete(f.seq)
              if (start !== undefined) phase.ackLatencies.push(performance.now() - start)
              phase.acked += SPANS_PER_BATCH
              if (performance.now() - started >= seconds * 1000 && sentAt.size === 0) ws.close()
            } else if (f.type === "error") reject(new Error(`${f.code}: ${f.message}`))
          })
          ws.on("close", () => resolve())
          ws.on("error", reject)
        })
    )
  )

const report = (name: string, p: Phase, seconds: number) => {
  const sorted = p.ackLatencies.sort((a, b) => a - b)
  const rate = p.acked / seconds
  console.log(
    `  ${name.padEnd(20)} ${fmt(rate)} spans/s acked, ack p50 ${fmt(percentile(sorted, 0.5), 1)} ms, p99 ${fmt(percentile(sorted, 0.99), 1)} ms` +
      (p.skipped > 0 ? `, ${p.skipped} batches not sent (${MAX_OUTSTANDING} unacked)` : "")
  )
  return { rate, p99: percentile(sorted, 0.99) }
}

console.log(
  `obs tail: paced ingest at ${fmt(RATE)} spans/s, ${SECONDS} s without subscribers, then ${SECONDS} s with 10`
)
const without: Phase = { acked: 0, skipped: 0, ackLatencies: [], nodeCpu: 0 }
await measure(SECONDS, without, 0)
// The subscribers run in their own process, as real tail clients do, so they do not share an event
// loop with the load generator.
const subscriberProcess = spawn(
  process.execPath,
  ["--no-warnings", fileURLToPath(new URL("./obs-tail-subscribers.ts", import.meta.url)), wsUrl],
  { stdio: ["pipe", "pipe", "inherit"] }
)
let subscriberOutput = ""
subscriberProcess.stdout?.on("data", (d: Buffer) => {
  subscriberOutput += d.toString()
})
while (!subscriberOutput.includes("ready\n")) await new Promise((r) => setTimeout(r, 10))
const withSubs: Phase = { acked: 0, skipped: 0, ackLatencies: [], nodeCpu: 0 }
await measure(SECONDS, withSubs, 100)
await new Promise((r) => setTimeout(r, 500))
const a = report("no subscribers", without, SECONDS)
const b = report("10 subscribers", withSubs, SECONDS)
const reported = new Promise<void>((r) => subscriberProcess.once("exit", () => r()))
subscriberProcess.stdin?.end("report\n")
await reported
const { latencies, delivered, dropped } = JSON.parse(
  subscriberOutput.slice(subscriberOutput.indexOf("{"))
) as {
  latencies: Array<number>
  delivered: number
  dropped: number
}
latencies.sort((x, y) => x - y)
console.log(
  `  commit → subscriber  p50 ${fmt(percentile(latencies, 0.5), 1)} ms, p99 ${fmt(percentile(latencies, 0.99), 1)} ms ` +
    `(${fmt(latencies.length)} messages, ${fmt(delivered)} spans delivered, ${fmt(dropped)} dropped)`
)
const cpuPerSpan = (p: Phase) => (p.nodeCpu * 1e6) / Math.max(1, p.acked)
console.log(
  `  node CPU per span    ${fmt(cpuPerSpan(without), 1)} µs without subscribers, ${fmt(cpuPerSpan(withSubs), 1)} µs with ` +
    `(+${fmt((100 * (cpuPerSpan(withSubs) - cpuPerSpan(without))) / cpuPerSpan(without))}%: what a CPU-bound node would lose in rate)`
)
const slowdown = (100 * (a.rate - b.rate)) / a.rate
console.log(
  `  ingest slowdown      ${fmt(slowdown, 1)}% in acked rate; ack p99 ${fmt(a.p99, 1)} → ${fmt(b.p99, 1)} ms` +
    `  (targets: delivery p99 ≤ 50 ms: ${percentile(latencies, 0.99) <= 50 ? "met" : "NOT met"}; slowdown ≤ 10%: ${slowdown <= 10 ? "met" : "NOT met"})`
)
node.child.kill(process.env.OBS_BENCH_NODE_ARGS === undefined ? "SIGKILL" : "SIGINT")
rmSync(dir, { recursive: true, force: true })
