/**
 * The README's examples, run: every `curl` line against a real node seeded with the data the
 * examples name (the https ones against its TLS listener, with the certificate the README's `openssl`
 * line makes), and the Layer example (its code is below, and the README must contain it).
 */
import { execFile, spawnSync } from "node:child_process"
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { promisify } from "node:util"
import { LmdbStore, ObsNode, Store } from "@iii/obs"
import { Effect, Option } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RunningNode, startNode, TestAgent, tempDir } from "./fixtures/Node.js"
import { log, span as makeSpan } from "./fixtures/Spans.js"

const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8")
const run = promisify(execFile)

/** The commands of the README's sh code blocks that start with `program` (continuations joined). */
const commandLines = (program: string): ReadonlyArray<string> =>
  Array.from(readme.matchAll(/```sh\n([\s\S]*?)```/g), (m) => (m[1] ?? "").replace(/\\\n\s*/g, " "))
    .flatMap((block) => block.split("\n"))
    .filter((line) => line.startsWith(`${program} `))

const canRunOpenssl = spawnSync("openssl", ["version"]).status === 0
if (!canRunOpenssl) console.warn("README https examples skipped: the openssl command is not installed")

describe("README", () => {
  let node: RunningNode
  // Where the README's openssl line writes tls.crt and tls.key; curl runs there too (--cacert tls.crt).
  const tlsDir = tempDir()
  beforeAll(async () => {
    if (canRunOpenssl)
      for (const line of commandLines("openssl")) await run("sh", ["-c", line], { cwd: tlsDir.path })
    node = await startNode(
      canRunOpenssl
        ? {
            tls: Option.some({
              certFile: join(tlsDir.path, "tls.crt"),
              keyFile: join(tlsDir.path, "tls.key"),
              port: 0
            })
          }
        : {}
    )
    const now = BigInt(Date.now()) * 1_000_000n
    const root = makeSpan({
      traceId: "4bf92f3577b34da6a3ce929d0e0e4736" as never,
      correlationId: "order-1234",
      startTimeUnixNano: now - 1_000_000_000n,
      durationNano: 300_000_000,
      http: { method: "POST", route: "/cart/{id}", statusCode: 503 },
      error: true
    })
    const agent = new TestAgent(node.url)
    await agent.hello("readme-agent")
    agent.send({
      type: "batch",
      seq: 1,
      spans: [root, makeSpan({ startTimeUnixNano: now })],
      metrics: [],
      logs: [log({ correlationId: "order-1234", timeUnixNano: now, body: "payment failed" })]
    })
    await agent.ack(1)
    agent.close()
  })
  afterAll(async () => {
    await node.stop()
    tlsDir.remove()
  })

  it("every curl example answers 200 with the documented shape", async () => {
    const lines = commandLines("curl")
    expect(lines.length).toBeGreaterThanOrEqual(14)
    expect(lines.filter((l) => l.includes("https://127.0.0.1:4321"))).toHaveLength(2)
    for (const line of lines) {
      if (line.includes("https://") && !canRunOpenssl) continue
      const tlsUrl = Option.match(node.tls, { onNone: () => "", onSome: (t) => t.url })
      const command = `${line.replaceAll("http://127.0.0.1:4320", node.url).replaceAll("https://127.0.0.1:4321", tlsUrl)} -w '\\n%{http_code}'`
      const { stdout } = await run("sh", ["-c", command], { cwd: tlsDir.path })
      const status = stdout.slice(stdout.lastIndexOf("\n") + 1)
      const body = stdout.slice(0, stdout.lastIndexOf("\n"))
      expect(status, line).toBe("200")
      if (line.includes("/v1/traces/")) expect(JSON.parse(body).spans, line).toHaveLength(1)
      if (line.includes("status=5xx")) expect(JSON.parse(body).traces, line).toHaveLength(1)
      if (line.includes("/v1/correlate/")) expect(JSON.parse(body).logs, line).toHaveLength(1)
      if (line.includes("iii_p99_latency_ms")) expect(JSON.parse(body).items, line).toHaveLength(1)
      if (line.includes("https://")) expect(body, line).toMatch(/APIResourceList|ok/)
    }
  })

  it("the Layer example runs, and the README shows it", async () => {
    const dir = tempDir()
    const dataDir = join(dir.path, "node")
    const storeDir = join(dir.path, "store")
    const span = makeSpan()
    try {
      // README example start
      // A whole node on a free port, running while the program uses it.
      const health = await Effect.gen(function* () {
        const node = yield* ObsNode.ObsNode
        const response = yield* Effect.promise(() => fetch(`${node.url}/healthz`))
        return response.status
      }).pipe(
        Effect.provide(ObsNode.layer(ObsNode.makeConfig(dataDir, { port: 0, host: "127.0.0.1" }))),
        Effect.runPromise
      )

      // Just the store: write a batch durably, read the trace back.
      const spans = await Effect.gen(function* () {
        const writer = yield* Store.BatchWriter
        const reader = yield* Store.SpanReader
        yield* writer.write([{ agentId: "agent-1", seq: 1, spans: [span], metrics: [], logs: [] }])
        return yield* reader.trace(span.traceId)
      }).pipe(Effect.provide(LmdbStore.layer({ path: storeDir })), Effect.runPromise)
      // README example end
      expect(health).toBe(200)
      expect(spans).toEqual([span])
    } finally {
      dir.remove()
    }
    const source = readFileSync(new URL(import.meta.url), "utf8")
    const example = /\/\/ README example start\n([\s\S]*?)\/\/ README example end/.exec(source)?.[1] ?? ""
    const squash = (s: string) => s.replace(/\s+/g, "")
    const readmeBlock = /```ts\n(?:import[^\n]*\n)*\n?([\s\S]*?)```/.exec(readme)?.[1] ?? "missing"
    expect(squash(readmeBlock)).toBe(squash(example))
  })
})
