/**
 * Issue #19: in eBPF mode the kernel carries the trace across services. Real eBPF (root, addon built,
 * a writable cgroup v2 hierarchy; skipped with the reason otherwise): processes are put in cgroups
 * traced with `propagation`, and what arrives on the wire is checked byte for byte.
 *
 * - two services with no tracing code, A calling B: every trace of A's route holds B's server span
 *   as the child of A's client span, itself the child of A's server span; the same with A started by
 *   the agent (`iii agent --propagation -- COMMAND`), in a cgroup the agent makes and removes;
 * - the framing the kernel follows: keep-alive, pipelined requests (one with a body that looks like
 *   a request), a request line split across sends, a chunked body with request-like chunks, 50 MB
 *   sent apart from its head to a slow reader, and a request that carries its own traceparent: each
 *   request gets exactly one traceparent at its head (the last untouched), every body arrives intact
 *   (SHA-256), and nothing is left unframed.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createHash, type Hash } from "node:crypto"
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmdirSync,
  rmSync
} from "node:fs"
import http from "node:http"
import net from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import type { Telemetry } from "@iii/core"
import { Context, Effect, Exit, Fiber, Layer, Logger, Scope, Stream } from "effect"
import { afterEach, describe, expect, it } from "vitest"
import * as Agent from "../../src/Agent.js"
import * as EbpfCapture from "../../src/EbpfCapture.js"
import * as Exporter from "../../src/Exporter.js"
import * as CommandCgroup from "../../src/internal/CommandCgroup.js"
import { EventProcessor } from "../../src/internal/EventProcessor.js"
import * as TracedCommand from "../../src/TracedCommand.js"
import { writableCgroup2Mount } from "../support/Cgroup2.js"
import { FakeObs, until } from "../support/FakeObs.js"

const availability = Effect.runSync(EbpfCapture.isAvailable)
const cgroup2Root = writableCgroup2Mount()
const skip = !availability.available
  ? `eBPF unavailable: ${availability.reasons.join("; ")}`
  : cgroup2Root === undefined
    ? "no writable cgroup v2 mount"
    : undefined
if (skip !== undefined) console.warn(`propagation tests skipped: ${skip}`)

const fixture = (name: string) => fileURLToPath(new URL(`../fixtures/${name}`, import.meta.url))

/** Run in reverse order after each test, each awaited (a cgroup can only go once its processes have). */
const cleanups: Array<() => unknown> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) {
    try {
      await cleanup()
    } catch (error) {
      console.warn(`cleanup failed: ${String(error)}`)
    }
  }
})

let groups = 0
const cgroup = (): string => {
  const path = `${cgroup2Root}/iii-propagation-${process.pid}-${groups++}`
  mkdirSync(path)
  cleanups.push(() => rmdirSync(path))
  return path
}

/** Runs `node args` inside `group` from its first instruction; stdout lines collected. */
const spawnIn = (group: string, args: ReadonlyArray<string>) => {
  const quoted = [process.execPath, ...args].map((a) => `'${a}'`).join(" ")
  const child: ChildProcess = spawn("sh", ["-c", `echo $$ > ${group}/cgroup.procs && exec ${quoted}`], {
    stdio: ["ignore", "pipe", "inherit"]
  })
  const lines: Array<string> = []
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => lines.push(line))
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  cleanups.push(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    return exited
  })
  const line = async (pattern: RegExp): Promise<RegExpExecArray> => {
    for (let i = 0; i < 6000; i++) {
      for (const candidate of lines) {
        const match = pattern.exec(candidate)
        if (match !== null) return match
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    throw new Error(`${args.join(" ")} never printed ${pattern}`)
  }
  return { child, lines, line, exited }
}

/** A capture with propagation, its events turned into spans by the agent's processor. */
const startCapture = async (identities: Record<number, string>) => {
  const spans: Array<Telemetry.Span> = []
  const scope = Effect.runSync(Scope.make())
  const capture = await Effect.runPromise(
    EbpfCapture.start({ enableCgroups: true, propagation: true, stdio: "off", pollIntervalMs: 20 }).pipe(
      Scope.extend(scope)
    )
  )
  const processor = new EventProcessor(
    {
      identity: { service: "unknown" },
      identityOf: (target) => {
        const service = identities[target]
        return service === undefined ? undefined : { service }
      },
      logs: false
    },
    { span: (span) => spans.push(span), log: () => {} },
    0n
  )
  const consumer = Effect.runFork(
    Stream.runForEach(capture.batches, (batch) => Effect.sync(() => processor.process(batch)))
  )
  const close = async () => {
    await Effect.runPromise(Fiber.interrupt(consumer))
    await Effect.runPromise(Scope.close(scope, Exit.void))
  }
  cleanups.push(close)
  return { capture, spans, processor, close }
}

/** Polls `find` for up to ~10 s. */
const eventually = async <A>(what: string, find: () => A | undefined): Promise<A> => {
  for (let i = 0; i < 500; i++) {
    const found = find()
    if (found !== undefined) return found
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  throw new Error(`never saw ${what}`)
}

interface Received {
  readonly method: string
  readonly path: string
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly sha256: string
  readonly length: number
}

/**
 * A strict HTTP/1.1 request reader over one connection's bytes: heads end at CRLFCRLF, bodies by
 * Content-Length or chunked encoding, hashed as they stream (50 MB never sits in memory whole).
 * Anything malformed throws, which fails the test.
 */
class RequestReader {
  private pending: Buffer = Buffer.alloc(0)
  private state: "head" | "body" | "chunk-size" | "chunk-data" | "chunk-end" | "trailers" = "head"
  private remaining = 0
  private current:
    | { method: string; path: string; headers: Array<[string, string]>; hash: Hash; length: number }
    | undefined
  readonly requests: Array<Received> = []

  constructor(private readonly onRequest: () => void) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    for (;;) {
      if (this.state === "body" || this.state === "chunk-data") {
        if (this.pending.length === 0) return
        const take = Math.min(this.remaining, this.pending.length)
        this.bodyBytes(this.pending.subarray(0, take))
        this.pending = this.pending.subarray(take)
        this.remaining -= take
        if (this.remaining > 0) return
        if (this.state === "body") this.finish()
        else this.state = "chunk-end"
        continue
      }
      const end = this.pending.indexOf(
        this.state === "head" || this.state === "trailers" ? "\r\n\r\n" : "\r\n"
      )
      if (this.state === "trailers" && this.pending.subarray(0, 2).toString() === "\r\n") {
        this.pending = this.pending.subarray(2)
        this.finish()
        continue
      }
      if (end < 0) return
      const text = this.pending.subarray(0, end).toString("latin1")
      const skip = this.state === "head" || this.state === "trailers" ? 4 : 2
      this.pending = this.pending.subarray(end + skip)
      if (this.state === "head") this.head(text)
      else if (this.state === "chunk-size") {
        const size = Number.parseInt(text.split(";")[0] ?? "", 16)
        if (!/^[0-9a-f]+(;.*)?$/i.test(text) || Number.isNaN(size))
          throw new Error(`bad chunk size line ${JSON.stringify(text)}`)
        if (size === 0) this.state = "trailers"
        else {
          this.state = "chunk-data"
          this.remaining = size
        }
      } else if (this.state === "chunk-end") {
        if (text !== "") throw new Error(`no CRLF after a chunk: ${JSON.stringify(text.slice(0, 40))}`)
        this.state = "chunk-size"
      } else {
        this.finish()
      }
    }
  }

  private head(text: string): void {
    const [line = "", ...fields] = text.split("\r\n")
    const match = /^([A-Z]+) (\S+) HTTP\/1\.1$/.exec(line)
    if (match === null) throw new Error(`bad request line ${JSON.stringify(line.slice(0, 80))}`)
    const headers = fields.map((field): [string, string] => {
      const colon = field.indexOf(":")
      if (colon <= 0) throw new Error(`bad header line ${JSON.stringify(field.slice(0, 80))}`)
      return [field.slice(0, colon).toLowerCase(), field.slice(colon + 1).trim()]
    })
    this.current = {
      method: match[1] ?? "",
      path: match[2] ?? "",
      headers,
      hash: createHash("sha256"),
      length: 0
    }
    const length = headers.find(([name]) => name === "content-length")?.[1]
    if (headers.some(([name, value]) => name === "transfer-encoding" && value === "chunked"))
      this.state = "chunk-size"
    else if (length !== undefined && Number(length) > 0) {
      this.state = "body"
      this.remaining = Number(length)
    } else this.finish()
  }

  private bodyBytes(bytes: Buffer): void {
    this.current?.hash.update(bytes)
    if (this.current !== undefined) this.current.length += bytes.length
  }

  private finish(): void {
    const current = this.current
    if (current === undefined) throw new Error("a body without a request")
    this.requests.push({
      method: current.method,
      path: current.path,
      headers: current.headers,
      sha256: current.hash.digest("hex"),
      length: current.length
    })
    this.current = undefined
    this.state = "head"
    this.onRequest()
  }
}

/** An untraced raw server answering every request "ok"; `slow`: it pauses its reading often. */
const rawServer = async (slow: boolean) => {
  const readers: Array<RequestReader> = []
  const errors: Array<string> = []
  const server = net.createServer((socket) => {
    const reader = new RequestReader(() => socket.write("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"))
    readers.push(reader)
    socket.on("data", (chunk) => {
      try {
        reader.push(chunk)
      } catch (error) {
        errors.push(String(error))
        socket.destroy()
      }
      if (slow) {
        socket.pause()
        setTimeout(() => socket.resume(), 2)
      }
    })
    socket.on("error", () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  cleanups.push(() => server.close())
  const port = (server.address() as net.AddressInfo).port
  return { port, readers, errors }
}

const traceparentOf = (request: Received) => request.headers.filter(([name]) => name === "traceparent")

/** A's route that calls B, answered in full (a fresh connection each time). */
const getOutbound = (port: number) =>
  new Promise<void>((resolve, reject) =>
    http
      .get({ host: "127.0.0.1", port, path: "/outbound", agent: false }, (res) => {
        res.resume()
        res.on("end", () => resolve())
      })
      .on("error", reject)
  )

describe.skipIf(skip !== undefined)("trace propagation (real eBPF)", () => {
  it("carries the trace from A to B: B's server span is the child of A's client span", async () => {
    const { capture, spans } = await startCapture({ 2: "a", 3: "b" })
    const groupA = cgroup()
    const groupB = cgroup()
    await Effect.runPromise(capture.addCgroup(groupA, 2, { propagate: true }))
    await Effect.runPromise(capture.addCgroup(groupB, 3, { propagate: true }))
    const b = spawnIn(groupB, [fixture("ebpf-server.mjs"), "127.0.0.1"])
    const portB = Number((await b.line(/^listening (\d+)$/))[1])
    const a = spawnIn(groupA, [fixture("ebpf-server.mjs"), "127.0.0.1", String(portB)])
    const portA = Number((await a.line(/^listening (\d+)$/))[1])

    const rounds = 5
    for (let i = 0; i < rounds; i++) {
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get({ host: "127.0.0.1", port: portA, path: "/outbound", agent: false }, (res) => {
            let text = ""
            res.on("data", (chunk: Buffer) => {
              text += chunk.toString()
            })
            res.on("end", () => resolve(text))
          })
          .on("error", reject)
      })
      expect(body).toBe("outbound done")
    }

    const serversA = await eventually("A's server spans", () => {
      const found = spans.filter((s) => s.service === "a" && s.kind === "server")
      const done = found.length === rounds && spans.filter((s) => s.service === "b").length === rounds
      return done ? found : undefined
    })
    for (const server of serversA) {
      // A trace the kernel started: its id begins with the time in milliseconds, as user space's do.
      expect(Math.abs(Number.parseInt(server.traceId.slice(0, 12), 16) - Date.now())).toBeLessThan(120_000)
      const trace = spans.filter((s) => s.traceId === server.traceId)
      const client = trace.find((s) => s.service === "a" && s.kind === "client")
      const downstream = trace.find((s) => s.service === "b" && s.kind === "server")
      expect(client?.parentSpanId).toBe(server.spanId)
      expect(downstream?.parentSpanId).toBe(client?.spanId)
      expect(downstream?.correlationId).toBe(server.correlationId)
    }
    const counters = await Effect.runPromise(capture.counters)
    expect(counters.injected).toBe(rounds)
    expect(counters.unframed).toBe(0)
  }, 60_000)

  it("the agent with propagation: obs gets A's and B's spans in one trace", async () => {
    const groupA = cgroup()
    const groupB = cgroup()
    const obs = new FakeObs()
    const url = await obs.start()
    cleanups.push(() => obs.stop())
    const scope = Effect.runSync(Scope.make())
    const layer = Agent.layer({
      identity: { service: "ab" },
      mode: "ebpf",
      cgroups: [groupA, groupB],
      propagation: true,
      capture: { stdio: "off", pollIntervalMs: 20 }
    }).pipe(
      Layer.provide(Exporter.layer({ urls: [url], agent: { id: Exporter.newAgentId(), service: "ab" } }))
    )
    await Effect.runPromise(Layer.buildWithScope(layer, scope))
    const b = spawnIn(groupB, [fixture("ebpf-server.mjs"), "127.0.0.1"])
    const portB = Number((await b.line(/^listening (\d+)$/))[1])
    const a = spawnIn(groupA, [fixture("ebpf-server.mjs"), "127.0.0.1", String(portB)])
    const portA = Number((await a.line(/^listening (\d+)$/))[1])
    await getOutbound(portA)
    await until("three spans of one trace in obs", () => {
      const spans = obs.spans
      return spans.some(
        (s) =>
          s.kind === "server" &&
          s.http?.path === "/upstream" &&
          spans.some((c) => c.spanId === s.parentSpanId)
      )
    })
    await Effect.runPromise(Scope.close(scope, Exit.void))
    const spans = obs.spans
    const downstream = spans.find((s) => s.kind === "server" && s.http?.path === "/upstream")
    const client = spans.find((s) => s.spanId === downstream?.parentSpanId)
    const upstream = spans.find((s) => s.spanId === client?.parentSpanId)
    expect(client?.kind).toBe("client")
    expect(upstream).toMatchObject({ kind: "server", http: { path: "/outbound" } })
    expect(new Set([downstream?.traceId, client?.traceId, upstream?.traceId]).size).toBe(1)
  }, 60_000)

  it("a command the agent starts (-- COMMAND) gets a cgroup of its own: A's calls carry the trace to B", async () => {
    const groupB = cgroup()
    const obs = new FakeObs()
    const url = await obs.start()
    cleanups.push(() => obs.stop())
    const scope = Effect.runSync(Scope.make())
    cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const layer = Agent.layer({
      identity: { service: "ab" },
      mode: "ebpf",
      cgroups: [groupB],
      propagation: true,
      startsCommand: true,
      capture: { stdio: "off", pollIntervalMs: 20 }
    }).pipe(
      Layer.provide(Exporter.layer({ urls: [url], agent: { id: Exporter.newAgentId(), service: "ab" } }))
    )
    const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
    const agent = Context.get(context, Agent.Agent)
    const commandCgroup = agent.commandCgroup
    expect(commandCgroup).toBeDefined()
    const b = spawnIn(groupB, [fixture("ebpf-server.mjs"), "127.0.0.1"])
    const portB = Number((await b.line(/^listening (\d+)$/))[1])
    // A, started by the agent as `iii agent -- node ebpf-server.mjs` does; its output to a file.
    const outputs = mkdtempSync(join(tmpdir(), "iii-propagation-"))
    cleanups.push(() => rmSync(outputs, { recursive: true }))
    const outputPath = join(outputs, "a.log")
    const output = openSync(outputPath, "a")
    cleanups.push(() => closeSync(output))
    const a = await Effect.runPromise(
      TracedCommand.start([process.execPath, fixture("ebpf-server.mjs"), "127.0.0.1", String(portB)], {
        output
      }).pipe(Effect.provide(context), Scope.extend(scope))
    )
    const portA = Number(
      (
        await eventually(
          "A listening",
          () => /^listening (\d+)$/m.exec(readFileSync(outputPath, "utf8")) ?? undefined
        )
      )[1]
    )
    // The command itself (after its exec) is in the directory.
    expect(readFileSync(`/proc/${a.pid}/cgroup`, "utf8")).toContain(
      `0::${commandCgroup?.slice(cgroup2Root?.length)}\n`
    )

    const rounds = 3
    for (let i = 0; i < rounds; i++) await getOutbound(portA)
    await until("every round's three spans in obs", () => {
      const spans = obs.spans
      return (
        spans.filter(
          (s) =>
            s.kind === "server" &&
            s.http?.path === "/upstream" &&
            spans.some((c) => c.spanId === s.parentSpanId && c.kind === "client")
        ).length === rounds
      )
    })
    const arrived = b.lines.flatMap(
      (line) => /^served GET \/upstream traceparent (\S+)$/.exec(line)?.[1] ?? []
    )
    expect(arrived).toHaveLength(rounds)
    const spans = obs.spans
    const upstreams = spans.filter((s) => s.kind === "server" && s.http?.path === "/outbound")
    expect(upstreams).toHaveLength(rounds)
    for (const upstream of upstreams) {
      const client = spans.find((s) => s.kind === "client" && s.parentSpanId === upstream.spanId)
      const downstream = spans.find((s) => s.kind === "server" && s.parentSpanId === client?.spanId)
      expect(client?.traceId).toBe(upstream.traceId)
      expect(downstream).toMatchObject({ traceId: upstream.traceId, http: { path: "/upstream" } })
      // What B received on the wire: A's trace, with A's client span as the parent.
      expect(arrived).toContain(`00-${upstream.traceId}-${client?.spanId}-01`)
    }
    await Effect.runPromise(Scope.close(scope, Exit.void))
    expect(existsSync(commandCgroup ?? "")).toBe(false)
  }, 60_000)

  it("says so at start when it cannot make the command's cgroup, and runs without propagation", async () => {
    // Taken already: the agent's mkdir fails (EEXIST), and it must not touch what is not its own.
    const own = CommandCgroup.cgroupV2Path(readFileSync("/proc/self/cgroup", "utf8")) ?? "/"
    const taken = join(cgroup2Root ?? "", own, CommandCgroup.directoryName(process.pid))
    mkdirSync(taken)
    cleanups.push(() => rmdirSync(taken))
    const obs = new FakeObs()
    const url = await obs.start()
    cleanups.push(() => obs.stop())
    const logged: Array<string> = []
    const scope = Effect.runSync(Scope.make())
    cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const layer = Agent.layer({
      identity: { service: "a" },
      mode: "ebpf",
      propagation: true,
      startsCommand: true,
      capture: { stdio: "off", pollIntervalMs: 20 }
    }).pipe(
      Layer.provide(Exporter.layer({ urls: [url], agent: { id: Exporter.newAgentId(), service: "a" } })),
      Layer.provide(
        Logger.replace(
          Logger.defaultLogger,
          Logger.make(({ message }) => logged.push(String(message)))
        )
      )
    )
    const context = await Effect.runPromise(Layer.buildWithScope(layer, scope))
    expect(Context.get(context, Agent.Agent).commandCgroup).toBeUndefined()
    expect(logged).toContainEqual(
      expect.stringMatching(/^propagation: off for the command: .*cannot create .*iii-command-\d+: EEXIST/)
    )
    expect(logged.some((line) => line.startsWith("propagation: on"))).toBe(false)
    await Effect.runPromise(Scope.close(scope, Exit.void))
    expect(existsSync(taken)).toBe(true)
  }, 60_000)

  it("refuses a propagating cgroup on a capture started without propagation", async () => {
    const scope = Effect.runSync(Scope.make())
    cleanups.push(() => Effect.runPromise(Scope.close(scope, Exit.void)))
    const capture = await Effect.runPromise(
      EbpfCapture.start({ enableCgroups: true, stdio: "off" }).pipe(Scope.extend(scope))
    )
    const error = await Effect.runPromise(Effect.flip(capture.addCgroup(cgroup(), 2, { propagate: true })))
    expect(error._tag).toBe("EbpfCaptureError")
    expect(error.message).toMatch(/propagation is off: start the capture with propagation: true/)
    const counters = await Effect.runPromise(capture.counters)
    expect(counters.injected).toBe(0)
  })

  it.each([
    ["keepalive", false],
    ["pipelined", false],
    ["split", false],
    ["chunked", false],
    ["large", true],
    ["carried", false]
  ] as const)(
    "frames %s requests: one traceparent at each head, bodies intact",
    async (scenario, slow) => {
      const { capture } = await startCapture({})
      const group = cgroup()
      await Effect.runPromise(capture.addCgroup(group, 2, { propagate: true }))
      const server = await rawServer(slow)
      const client = spawnIn(group, [fixture("propagation-client.mjs"), String(server.port), scenario])
      await client.line(/^done$/)
      const expected = client.lines
        .filter((line) => line.startsWith("{"))
        .map((line) => {
          const sent = JSON.parse(line) as { path: string; sha256: string; length: number }
          return { path: sent.path, sha256: sent.sha256, length: sent.length }
        })
      expect(server.errors).toEqual([])
      const received = server.readers.flatMap((reader) => reader.requests)
      expect(received.map((r) => r.path)).toEqual(expected.map((e) => e.path))
      received.forEach((request, i) => {
        expect({ path: request.path, sha256: request.sha256, length: request.length }).toEqual(expected[i])
        const traceparents = traceparentOf(request)
        expect(traceparents).toHaveLength(1)
        if (scenario === "carried") {
          expect(traceparents[0]?.[1]).toBe("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
          expect(request.headers.some(([name]) => name === "x-iii-correlation-id")).toBe(false)
        } else {
          expect(traceparents[0]?.[1]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/)
          const correlation = request.headers.find(([name]) => name === "x-iii-correlation-id")?.[1]
          expect(correlation).toBe(traceparents[0]?.[1].slice(3, 35))
        }
      })
      const counters = await Effect.runPromise(capture.counters)
      expect(counters.unframed).toBe(0)
      expect(counters.skipped).toBe(0)
      expect(counters.injected).toBe(scenario === "carried" ? 0 : expected.length)
      expect(counters.carried).toBe(scenario === "carried" ? 1 : 0)
    },
    120_000
  )
})
