/**
 * Real eBPF: these tests load the capture programs into this machine's kernel and trace child
 * processes (a Node HTTP server, Python scripts for the iovec syscalls). They need root (or
 * CAP_BPF + CAP_PERFMON), kernel BTF and the addon built by `npm run build:native`; otherwise they
 * are skipped with the reason printed.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { accessSync, constants, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs"
import http from "node:http"
import net from "node:net"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Effect, Fiber, Schedule, type Scope, Stream } from "effect"
import { describe, expect, it } from "vitest"
import type { CaptureEvent, DataEvent, OpenEvent } from "../src/CaptureEvent.js"
import * as EbpfCapture from "../src/EbpfCapture.js"
import * as NativeAddon from "../src/internal/NativeAddon.js"

const availability = Effect.runSync(EbpfCapture.isAvailable)
const canRun = availability.available
if (!canRun) console.warn(`EbpfCapture tests skipped: ${availability.reasons.join("; ")}`)
const hasPython = spawnSync("python3", ["--version"]).status === 0
if (canRun && !hasPython) console.warn("EbpfCapture iovec/drop tests skipped: python3 is not installed")

/** A writable cgroup v2 hierarchy (pure v2 at /sys/fs/cgroup, or the hybrid layout's "unified"). */
const cgroup2Root = (() => {
  try {
    const mounts = readFileSync("/proc/mounts", "utf8").split("\n")
    const mount = mounts.map((line) => line.split(" ")).find((fields) => fields[2] === "cgroup2")?.[1]
    if (mount === undefined) return undefined
    accessSync(mount, constants.W_OK)
    return mount
  } catch {
    return undefined
  }
})()
if (canRun && cgroup2Root === undefined)
  console.warn("EbpfCapture cgroup test skipped: no writable cgroup v2 mount")

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url))
const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("latin1")

interface Child {
  readonly process: ChildProcess
  readonly pid: number
  /** Resolves with the first stdout line matching `pattern`. */
  readonly line: (pattern: RegExp) => Effect.Effect<RegExpExecArray>
}

const spawnChild = (command: string, args: ReadonlyArray<string>): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(command, args, { stdio: ["pipe", "pipe", "inherit"] })
      const lines: Array<string> = []
      const waiters = new Set<() => void>()
      createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
        lines.push(line)
        for (const wake of waiters) wake()
      })
      const line = (pattern: RegExp) =>
        Effect.async<RegExpExecArray>((resume) => {
          const check = () => {
            for (const candidate of lines) {
              const match = pattern.exec(candidate)
              if (match !== null) {
                waiters.delete(check)
                resume(Effect.succeed(match))
                return
              }
            }
          }
          waiters.add(check)
          check()
          return Effect.sync(() => waiters.delete(check))
        })
      return { process: child, pid: child.pid ?? 0, line }
    }),
    (child) => Effect.sync(() => child.process.kill("SIGKILL"))
  )

/** Events collected in the background; `until` waits (up to ~10 s) for a condition over them. */
const collect = (capture: EbpfCapture.EbpfCapture) =>
  Effect.gen(function* () {
    const events: Array<CaptureEvent> = []
    yield* Effect.forkScoped(
      Stream.runForEach(capture.batches, (batch) =>
        Effect.sync(() => {
          // Payloads are views into a buffer the capture reuses: keep copies.
          for (const e of batch)
            events.push(e.kind === "data" ? { ...e, payload: Uint8Array.from(e.payload) } : e)
        })
      )
    )
    const until = <A>(what: string, find: (events: ReadonlyArray<CaptureEvent>) => A | undefined) =>
      Effect.gen(function* () {
        for (let attempt = 0; attempt < 500; attempt++) {
          const found = find(events)
          if (found !== undefined) return found
          yield* Effect.sleep("20 millis")
        }
        const kinds = events.map((event) => event.kind).join(",")
        return yield* Effect.dieMessage(`never saw ${what}; saw ${events.length} events: ${kinds}`)
      })
    return { events, until }
  })

const request = (url: string) =>
  Effect.promise(
    () =>
      new Promise<{ status: number; body: string; localPort: number }>((resolve, reject) => {
        const req = http.get(url, { agent: false, headers: { connection: "close" } }, (res) => {
          let body = ""
          res.setEncoding("utf8")
          res.on("data", (chunk: string) => {
            body += chunk
          })
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, body, localPort: req.socket?.localPort ?? 0 })
          )
        })
        req.on("error", reject)
      })
  )

/** An HTTP server in this (untraced) process, the target of the traced server's outbound call. */
const upstreamServer = Effect.acquireRelease(
  Effect.promise(
    () =>
      new Promise<http.Server>((resolve) => {
        const server = http.createServer((_req, res) => res.end("upstream says hi"))
        server.listen(0, "127.0.0.1", () => resolve(server))
      })
  ),
  (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
)

const portOf = (server: http.Server | net.Server): number => {
  const address = server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

const isData = (event: CaptureEvent): event is DataEvent => event.kind === "data"
const isOpen = (event: CaptureEvent): event is OpenEvent => event.kind === "open"

describe("EbpfCapture (real eBPF)", () => {
  it.skipIf(!canRun)(
    "traces a Node HTTP server: the socket's open (addresses), request and response bytes, close, stdout, the outbound socket, fork",
    () =>
      Effect.gen(function* () {
        const upstream = yield* upstreamServer
        const server = yield* spawnChild(process.execPath, [
          fixture("ebpf-server.mjs"),
          "127.0.0.1",
          String(portOf(upstream))
        ])
        const port = Number((yield* server.line(/^listening (\d+)$/))[1])
        const capture = yield* EbpfCapture.start({ pids: [server.pid] })
        const { until } = yield* collect(capture)

        const response = yield* request(`http://127.0.0.1:${port}/hello?x=1`)
        expect(response).toMatchObject({ status: 200, body: "hello from the traced server" })

        const accept = yield* until("the accepted socket's open", (events) =>
          events.find((e) => isOpen(e) && e.pid === server.pid && e.peerPort === response.localPort)
        )
        expect(accept).toMatchObject({
          kind: "open",
          family: 4,
          localAddress: "127.0.0.1",
          localPort: port,
          peerAddress: "127.0.0.1",
          peerPort: response.localPort
        })
        if (accept.kind !== "open") return
        const onConnection = (e: CaptureEvent): e is DataEvent =>
          isData(e) && e.pid === server.pid && e.fd === accept.fd
        const requestBytes = yield* until("the request bytes", (events) =>
          events.find((e): e is DataEvent => onConnection(e) && e.direction === "ingress")
        )
        expect(text(requestBytes.payload)).toMatch(/^GET \/hello\?x=1 HTTP\/1\.1\r\n/)
        expect(requestBytes.totalLength).toBe(requestBytes.payload.byteLength)
        const responseBytes = yield* until("the response bytes", (events) =>
          events.find(
            (e): e is DataEvent =>
              onConnection(e) && e.direction === "egress" && text(e.payload).startsWith("HTTP/1.1 200")
          )
        )
        expect(["write", "writev", "sendto", "sendmsg"]).toContain(responseBytes.syscall)
        yield* until("the close", (events) =>
          events.find((e) => e.kind === "close" && e.pid === server.pid && e.fd === accept.fd)
        )
        const log = yield* until("the stdout line", (events) =>
          events.find(
            (e): e is DataEvent =>
              isData(e) && e.pid === server.pid && e.fd === 1 && text(e.payload).includes("served GET")
          )
        )
        expect(log).toMatchObject({ direction: "egress", syscall: "write" })
        expect(text(log.payload)).toBe("served GET /hello?x=1\n")
        // Unix nanoseconds, not the kernel's monotonic clock.
        const nowNs = BigInt(Date.now()) * 1_000_000n
        expect(Number(nowNs - log.timestampNs) / 1e9).toBeLessThan(60)
        expect(Number(nowNs - log.timestampNs) / 1e9).toBeGreaterThan(-60)

        // The server's own outbound call is a connect to the upstream's port.
        const outbound = yield* request(`http://127.0.0.1:${port}/outbound`)
        expect(outbound.body).toBe("outbound done")
        const connect = yield* until("the outbound socket's open", (events) =>
          events.find((e) => e.kind === "open" && e.pid === server.pid && e.peerPort === portOf(upstream))
        )
        expect(connect).toMatchObject({ family: 4, localAddress: "127.0.0.1", peerAddress: "127.0.0.1" })
        if (connect.kind !== "open") return
        expect(connect.localPort).toBeGreaterThan(0)
        const upstreamRequest = yield* until("the outbound request bytes", (events) =>
          events.find(
            (e): e is DataEvent =>
              isData(e) && e.pid === server.pid && e.fd === connect.fd && e.direction === "egress"
          )
        )
        expect(text(upstreamRequest.payload)).toMatch(/^GET \/upstream HTTP\/1\.1\r\n/)

        // Children of a traced process are traced: the fork, the child's stdout, its exit.
        yield* request(`http://127.0.0.1:${port}/fork`)
        const fork = yield* until("the fork", (events) =>
          events.find((e) => e.kind === "fork" && e.parentPid === server.pid)
        )
        if (fork.kind !== "fork") return
        const childOutput = yield* until("the forked child's stdout", (events) =>
          events.find(
            (e): e is DataEvent =>
              isData(e) && e.pid === fork.childPid && text(e.payload).includes("forked-child-says-hi")
          )
        )
        expect(childOutput.fd).toBe(1)
        yield* until("the forked child's exit", (events) =>
          events.find((e) => e.kind === "exit" && e.pid === fork.childPid)
        )

        const counters = yield* capture.counters
        expect(counters.records).toBeGreaterThan(0)
        expect(counters).toMatchObject({ dropped: 0, malformed: 0 })
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun)("reports IPv6 addresses", () =>
    Effect.gen(function* () {
      const server = yield* spawnChild(process.execPath, [fixture("ebpf-server.mjs"), "::1"])
      const port = Number((yield* server.line(/^listening (\d+)$/))[1])
      const capture = yield* EbpfCapture.start({ pids: [server.pid] })
      const { until } = yield* collect(capture)
      const response = yield* request(`http://[::1]:${port}/v6`)
      expect(response.status).toBe(200)
      const accept = yield* until("the IPv6 socket's open", (events) =>
        events.find((e) => isOpen(e) && e.pid === server.pid && e.peerPort === response.localPort)
      )
      expect(accept).toMatchObject({ family: 6, localAddress: "::1", localPort: port, peerAddress: "::1" })
    }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || !hasPython)(
    "captures readv/writev/recvmsg/sendmsg/recvfrom/sendto payloads across iovecs, sendfile lengths; not peeks or datagrams",
    () =>
      Effect.gen(function* () {
        const replies = ["reply-1|", "reply-2|", "reply-3|"]
        const echo = yield* Effect.acquireRelease(
          Effect.promise(
            () =>
              new Promise<net.Server>((resolve) => {
                const server = net.createServer((socket) => {
                  let seen = 0
                  socket.on("data", (chunk) => {
                    for (const byte of chunk) if (byte === 0x7c) socket.write(replies[seen++] ?? "")
                  })
                  socket.on("error", () => undefined)
                })
                server.listen(0, "127.0.0.1", () => resolve(server))
              })
          ),
          (server) => Effect.promise(() => new Promise<void>((resolve) => server.close(() => resolve())))
        )
        const script = yield* spawnChild("python3", [fixture("ebpf-vector-io.py"), String(portOf(echo))])
        const capture = yield* EbpfCapture.start({ pids: [script.pid] })
        const { events, until } = yield* collect(capture)
        script.process.stdin?.write("go\n")
        yield* script.line(/^vector-io done$/)
        const bySyscall = (syscall: DataEvent["syscall"]) =>
          until(syscall, (all) =>
            all.find((e): e is DataEvent => isData(e) && e.pid === script.pid && e.syscall === syscall)
          )

        const writev = yield* bySyscall("writev")
        expect({
          payload: text(writev.payload),
          totalLength: writev.totalLength,
          direction: writev.direction
        }).toEqual({
          payload: "WRITEV-part-two|",
          totalLength: 16,
          direction: "egress"
        })
        const readv = yield* bySyscall("readv")
        expect({ payload: text(readv.payload), direction: readv.direction }).toEqual({
          payload: "reply-1|",
          direction: "ingress"
        })
        expect(text((yield* bySyscall("sendmsg")).payload)).toBe("SENDMSG-part-two|")
        expect(text((yield* bySyscall("recvmsg")).payload)).toBe("reply-2|")
        expect(text((yield* bySyscall("sendto")).payload)).toBe("SENDTO|")
        expect(text((yield* bySyscall("recvfrom")).payload)).toBe("reply-3|")
        const sendfile = yield* bySyscall("sendfile")
        expect({ totalLength: sendfile.totalLength, captured: sendfile.payload.byteLength }).toEqual({
          totalLength: 13,
          captured: 0
        })
        // The MSG_PEEK read of reply-3 is not reported: its bytes would otherwise count twice.
        expect(events.filter((e) => isData(e) && e.syscall === "recvfrom")).toHaveLength(1)
        const connect = yield* until("the socket's open", (all) =>
          all.find((e) => e.kind === "open" && e.pid === script.pid && e.peerPort === portOf(echo))
        )
        expect(connect).toMatchObject({ peerPort: portOf(echo), peerAddress: "127.0.0.1", fd: writev.fd })
        yield* until("the close", (all) =>
          all.find((e) => e.kind === "close" && e.pid === script.pid && e.fd === writev.fd)
        )
        // Nothing of the UDP socket (used last, just before exit): no connect, no bytes.
        yield* until("the script's exit", (all) => all.find((e) => e.kind === "exit" && e.pid === script.pid))
        const udp = events.filter(
          (e) => (e.kind === "open" && e.peerPort === 9) || (isData(e) && text(e.payload).includes("UDP"))
        )
        expect(udp).toEqual([])
        // Nothing from untraced processes: every event is the script's or a descendant's (python3 may
        // be a shim that forks helpers before it execs the interpreter).
        const traced = new Set([script.pid])
        for (const e of events) if (e.kind === "fork" && traced.has(e.parentPid)) traced.add(e.childPid)
        expect(events.filter((e) => "pid" in e && !traced.has(e.pid))).toEqual([])
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || !hasPython)(
    "truncates payloads to the configured size and keeps the full length",
    () =>
      Effect.gen(function* () {
        const script = yield* spawnChild("python3", [fixture("ebpf-stdout.py"), "10000"])
        const capture = yield* EbpfCapture.start({ pids: [script.pid], payloadBytes: 1000 })
        const { until } = yield* collect(capture)
        script.process.stdin?.write("go\n")
        const write = yield* until("the big stdout write", (events) =>
          events.find(
            (e): e is DataEvent => isData(e) && e.pid === script.pid && e.fd === 1 && e.totalLength > 1000
          )
        )
        expect({ totalLength: write.totalLength, captured: write.payload.byteLength }).toEqual({
          totalLength: 10001,
          captured: 1000
        })
        expect(text(write.payload)).toBe("x".repeat(1000))
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || !hasPython)(
    "counts events the ring buffer could not take, and says which process and fd lost what",
    () =>
      Effect.gen(function* () {
        const script = yield* spawnChild("python3", [fixture("ebpf-stdout.py"), "6000"])
        // A one-page ring cannot hold a 4 KiB-payload record: the kernel must drop and count it.
        const capture = yield* EbpfCapture.start({
          pids: [script.pid],
          ringBufferBytes: 4096,
          payloadBytes: 4096
        })
        const { until } = yield* collect(capture)
        script.process.stdin?.write("go\n")
        const lost = yield* until("the loss notice", (events) =>
          events.find((e) => e.kind === "lost" && e.pid === script.pid)
        )
        expect(lost).toMatchObject({
          kind: "lost",
          lost: "data",
          fd: 1,
          direction: "egress",
          syscall: "write",
          totalLength: 6001
        })
        const counters = yield* capture.counters
        expect(counters.dropped).toBeGreaterThanOrEqual(1)
        expect(counters.losses + counters.unrecorded).toBe(counters.dropped)
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || !hasPython)(
    "maps the kernel ring's data pages once, and hands over whole the records that wrap around its end",
    () =>
      Effect.gen(function* () {
        const ringBytes = 8192
        // 300 writes of 500-1,200 bytes through an 8 KiB ring: it wraps ~30 times, mostly mid-record.
        const script = yield* spawnChild("python3", [
          "-c",
          "import os, sys, time\nsys.stdin.readline()\nfor i in range(300):\n" +
            '  os.write(1, b"%05d" % i + bytes([97 + i % 26]) * (500 + i * 37 % 700) + b"\\n")\n' +
            "  time.sleep(0.002)"
        ])
        const capture = yield* EbpfCapture.start({ pids: [script.pid], ringBufferBytes: ringBytes })
        // One mapping of the producer page and the data (aya mapped the data twice: RSS counted it twice).
        const pageBytes = 4096
        const ringMappings = readFileSync("/proc/self/maps", "utf8")
          .split("\n")
          .filter((line) => line.endsWith("anon_inode:bpf-map"))
          .map((line) => {
            const [start = "0", end = "0"] = (line.split(" ")[0] ?? "").split("-")
            return Number.parseInt(end, 16) - Number.parseInt(start, 16)
          })
        expect(ringMappings).toContain(pageBytes + ringBytes)
        expect(ringMappings).not.toContain(pageBytes + 2 * ringBytes)
        const { events } = yield* collect(capture)
        script.process.stdin?.write("go\n")
        const writes = (all: ReadonlyArray<CaptureEvent>) =>
          all.filter((e): e is DataEvent => e.kind === "data" && e.pid === script.pid && e.fd === 1)
        // Every write handed over or counted as dropped (a reader starved of CPU may drop any, the last too).
        const dropped = yield* Effect.gen(function* () {
          const { dropped } = yield* capture.counters
          const seen = writes(events).length
          return seen + dropped >= 300 ? dropped : yield* Effect.fail(`${seen} seen + ${dropped} dropped`)
        }).pipe(
          Effect.retry(Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(500)))),
          Effect.orDieWith((accounted) => new Error(`not all 300 writes accounted for: ${accounted}`))
        )
        const seen = writes(events)
        expect(seen.length + dropped).toBeGreaterThanOrEqual(300)
        expect(seen.length).toBeGreaterThanOrEqual(10)
        for (const write of seen) {
          const i = Number(text(write.payload).slice(0, 5))
          const expected = `${String(i).padStart(5, "0")}${String.fromCharCode(97 + (i % 26)).repeat(500 + ((i * 37) % 700))}\n`
          expect(text(write.payload)).toBe(expected)
        }
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun)(
    "drains on request: what was captured before the stop arrives, then the stream ends",
    () =>
      Effect.gen(function* () {
        const server = yield* spawnChild(process.execPath, [fixture("ebpf-server.mjs")])
        const port = Number((yield* server.line(/^listening (\d+)$/))[1])
        // A poll far longer than the test: only the drain can hand the request's records over.
        const capture = yield* EbpfCapture.start({ pids: [server.pid], pollIntervalMs: 60_000 })
        const response = yield* request(`http://127.0.0.1:${port}/drained`)
        expect(response.status).toBe(200)
        const seen: Array<string> = []
        const consumer = yield* Effect.fork(
          Stream.runForEach(capture.batches, (batch) =>
            Effect.sync(() => {
              for (const e of batch) if (e.kind === "data") seen.push(text(e.payload))
            })
          )
        )
        yield* capture.drain
        yield* Fiber.join(consumer).pipe(Effect.timeout("5 seconds"))
        expect(seen.some((payload) => payload.startsWith("GET /drained"))).toBe(true)
        // Stopped: a request now is not captured, and the counters still answer.
        yield* request(`http://127.0.0.1:${port}/after`)
        expect((yield* capture.counters).abandoned).toBe(0)
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || !hasPython)(
    "never holds more than its batch buffers: a consumer that stops pulling leaves the backlog in the ring, counted when it overflows",
    () =>
      Effect.gen(function* () {
        const script = yield* spawnChild("python3", [
          "-c",
          // Writes until killed, so the ring keeps refilling whatever the reader's timer.
          'import os, sys, time\nsys.stdin.readline()\nwhile True:\n  os.write(1, b"x" * 4000 + b"\\n")\n  time.sleep(0.0002)'
        ])
        const capture = yield* EbpfCapture.start({
          pids: [script.pid],
          batchBuffers: 2,
          batchBytes: 64 * 1024,
          ringBufferBytes: 64 * 1024
        })
        // Nobody pulls `batches`: after two full buffers the reader has nowhere to write.
        script.process.stdin?.write("go\n")
        let counters = yield* capture.counters
        for (let attempt = 0; attempt < 500 && counters.dropped === 0; attempt++) {
          yield* Effect.sleep("20 millis")
          counters = yield* capture.counters
        }
        expect(counters.dropped).toBeGreaterThan(0)
        expect(counters.batches).toBeLessThanOrEqual(2)
        expect(counters.inFlight).toBe(counters.batches)
        // Pulling again hands buffers back and the reader moves on.
        const seen = yield* capture.batches.pipe(Stream.take(3), Stream.runCount)
        expect(seen).toBe(3)
        expect((yield* capture.counters).batches).toBeGreaterThan(2)
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun)("the addon takes back only the batch buffers it handed over, once each", () => {
    const loaded = NativeAddon.load()
    if (loaded._tag === "Missing") throw new Error(loaded.reason)
    const capture = loaded.addon.Capture.start({}, [Buffer.alloc(64 * 1024)], () => {})
    try {
      // Taking back a buffer JavaScript does not hold would let the reader overwrite a batch being read.
      expect(() => capture.recycle(0)).toThrow(/batch buffer 0 is not JavaScript's to recycle/)
      expect(() => capture.recycle(1)).toThrow(/no batch buffer 1/)
    } finally {
      capture.close()
    }
  })

  it.skipIf(!canRun)(
    "writes one clock offset into every batch, so times from different batches keep the kernel's spacing",
    () =>
      Effect.gen(function* () {
        const loaded = NativeAddon.load()
        if (loaded._tag === "Missing") throw new Error(loaded.reason)
        const server = yield* spawnChild(process.execPath, [fixture("ebpf-server.mjs"), "127.0.0.1"])
        const port = Number((yield* server.line(/^listening (\d+)$/))[1])
        const buffers = Array.from({ length: 4 }, () => Buffer.alloc(256 * 1024))
        // Each batch's header: the offset from the programs' monotonic clock to unix time.
        const offsets: Array<bigint> = []
        const capture = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const started: NativeAddon.NativeCapture = loaded.addon.Capture.start(
              { pids: [server.pid], pollIntervalMs: 5 },
              buffers,
              (index) => {
                if (index === NativeAddon.endOfCapture) return
                offsets.push(buffers[index]?.readBigInt64LE(0) ?? 0n)
                started.recycle(index)
              }
            )
            return started
          }),
          (capture) => Effect.sync(() => capture.close())
        )
        // One request at a time, each read in a batch of its own (the reader polls every 5 ms).
        for (let i = 0; i < 12; i++) {
          yield* request(`http://127.0.0.1:${port}/batch-${i}`)
          yield* Effect.sleep("30 millis")
        }
        for (let attempt = 0; attempt < 250 && offsets.length < 10; attempt++)
          yield* Effect.sleep("20 millis")
        expect(capture.counters().batches).toBeGreaterThanOrEqual(10)
        // Read afresh per batch (two clock calls), the offset moved by the time between them: a span
        // whose start and end came in different batches had a wrong, even negative, duration.
        expect(new Set(offsets).size).toBe(1)
        const offset = offsets[0] ?? 0n
        const unixNow = BigInt(Date.now()) * 1_000_000n
        const monotonicNow = process.hrtime.bigint()
        // And it is the clocks' offset (Date.now() has milliseconds).
        expect(Math.abs(Number(monotonicNow + offset - unixNow))).toBeLessThan(5_000_000)
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun)(
    "follows pids added after start, forgets removed ones, rejects cgroup targets it was not started with",
    () =>
      Effect.gen(function* () {
        const capture = yield* EbpfCapture.start()
        const { events, until } = yield* collect(capture)
        const server = yield* spawnChild(process.execPath, [fixture("ebpf-server.mjs"), "127.0.0.1"])
        const port = Number((yield* server.line(/^listening (\d+)$/))[1])
        const acceptOf = (localPort: number) => (all: ReadonlyArray<CaptureEvent>) =>
          all.find((e) => isOpen(e) && e.pid === server.pid && e.peerPort === localPort)
        yield* capture.addPid(server.pid)
        const traced = yield* request(`http://127.0.0.1:${port}/late`)
        yield* until("the accepted socket's open", acceptOf(traced.localPort))

        yield* capture.removePid(server.pid)
        // Removing a pid that is not traced (e.g. the exit probe already forgot it) is not an error.
        yield* capture.removePid(server.pid)
        const untraced = yield* request(`http://127.0.0.1:${port}/removed`)
        yield* capture.addPid(server.pid)
        const again = yield* request(`http://127.0.0.1:${port}/again`)
        // The ring is ordered: once the later accept is in, the earlier one would be too.
        yield* until("the accept after re-adding", acceptOf(again.localPort))
        expect(acceptOf(untraced.localPort)(events)).toBeUndefined()
        const error = yield* Effect.flip(capture.addCgroup("/sys/fs/cgroup"))
        expect(error._tag).toBe("EbpfCaptureError")
        expect(error.message).toMatch(/cgroup targets are disabled/)
      }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun || cgroup2Root === undefined)("traces every process of a cgroup", () =>
    Effect.gen(function* () {
      const root = cgroup2Root ?? ""
      const group = yield* Effect.acquireRelease(
        Effect.sync(() => {
          const path = `${root}/iii-test-${process.pid}-${Date.now()}`
          mkdirSync(path)
          return path
        }),
        (path) => Effect.sync(() => rmdirSync(path))
      )
      // Spawned after the cgroup (released last: a cgroup can only be removed once empty).
      const server = yield* spawnChild(process.execPath, [fixture("ebpf-server.mjs"), "127.0.0.1"])
      const port = Number((yield* server.line(/^listening (\d+)$/))[1])
      writeFileSync(`${group}/cgroup.procs`, String(server.pid))
      yield* Effect.addFinalizer(() =>
        Effect.async<void>((resume) => {
          if (server.process.exitCode !== null || server.process.signalCode !== null)
            return resume(Effect.void)
          server.process.once("exit", () => resume(Effect.void))
          server.process.kill("SIGKILL")
        })
      )
      const capture = yield* EbpfCapture.start({ cgroups: [group] })
      const { until } = yield* collect(capture)
      const response = yield* request(`http://127.0.0.1:${port}/by-cgroup`)
      const accept = yield* until("the accepted socket's open", (events) =>
        events.find((e) => isOpen(e) && e.pid === server.pid && e.peerPort === response.localPort)
      )
      expect(accept).toMatchObject({ localPort: port })
      yield* until("the stdout line", (events) =>
        events.find(
          (e) => isData(e) && e.pid === server.pid && text(e.payload).includes("served GET /by-cgroup")
        )
      )
    }).pipe(Effect.scoped, Effect.runPromise)
  )

  it.skipIf(!canRun)("turns bad options into tagged errors", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(EbpfCapture.start({ ringBufferBytes: 5000 }))
      expect(error._tag).toBe("EbpfCaptureError")
      expect(error.message).toMatch(/power of two/)
      const missing = yield* Effect.flip(EbpfCapture.start({ objectPath: "/nonexistent/iii.bpf.o" }))
      expect(missing.message).toMatch(/\/nonexistent\/iii\.bpf\.o/)
    }).pipe(Effect.scoped, Effect.runPromise)
  )
})
