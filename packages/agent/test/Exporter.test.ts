import { type Telemetry, TraceContext } from "@iii/core"
import { Effect } from "effect"
import { describe, expect, it } from "vitest"
import * as Exporter from "../src/Exporter.js"
import { FakeObs, freePort, until } from "./support/FakeObs.js"

const span = (i: number): Telemetry.Span => ({
  traceId: TraceContext.newTraceId(),
  spanId: TraceContext.newSpanId(),
  correlationId: `c-${i}`,
  service: "checkout",
  kind: "server",
  name: "GET /items/{id}",
  startTimeUnixNano: 1_700_000_000_000_000_000n + BigInt(i),
  durationNano: 1_000_000,
  http: { method: "GET", route: "/items/{id}", path: `/items/${i}`, statusCode: 200 },
  error: false
})

const fastRetry = { initialBackoffMs: 10, maxBackoffMs: 100, flushIntervalMs: 20, drainTimeoutMs: 500 }

/** Runs `body` with an exporter to `urls`, closing it afterwards. */
const withExporter = <A>(
  urls: ReadonlyArray<string>,
  options: Partial<Exporter.ExporterOptions>,
  body: (exporter: Exporter.ExporterService) => Promise<A>
): Promise<A> =>
  Effect.runPromise(
    Effect.scoped(
      Effect.gen(function* () {
        const exporter = yield* Exporter.make({
          urls,
          agent: { id: Exporter.newAgentId(), service: "checkout" },
          ...fastRetry,
          ...options
        })
        return yield* Effect.promise(() => body(exporter))
      })
    )
  )

const stats = (exporter: Exporter.ExporterService) => Effect.runSync(exporter.stats)

describe("Exporter", () => {
  it("builds the ingest URL from a base URL", () => {
    expect(Exporter.ingestUrl("ws://127.0.0.1:7070")).toBe("ws://127.0.0.1:7070/v1/ingest")
    expect(Exporter.ingestUrl("http://obs:7070/")).toBe("ws://obs:7070/v1/ingest")
    expect(Exporter.ingestUrl("https://obs.example/base")).toBe("wss://obs.example/base/v1/ingest")
  })

  it("delivers everything once obs comes up after the agent (obs down at start)", async () => {
    const port = await freePort()
    const obs = new FakeObs()
    await withExporter([`ws://127.0.0.1:${port}`], {}, async (exporter) => {
      for (let i = 0; i < 500; i++) exporter.span(span(i))
      await until("a few failed connection attempts", () => stats(exporter).disconnects >= 3)
      expect(obs.spans).toHaveLength(0)
      await obs.start(port)
      await until("all spans acked", () => obs.spans.length === 500 && stats(exporter).bufferedBatches === 0)
      const s = stats(exporter)
      expect(s.connects).toBe(1)
      expect(s.batchesDropped).toBe(0)
      expect(s.batchesAcked).toBe(s.batchesSealed)
    })
    await obs.stop()
  })

  it("stopped while its first handshake is under way, delivers what it has", async () => {
    const obs = new FakeObs({ welcomeDelayMs: 300 })
    const url = await obs.start()
    await withExporter([url], { drainTimeoutMs: 3000 }, async (exporter) => {
      for (let i = 0; i < 20; i++) exporter.span(span(i))
      await until("the hello", () => obs.hellos === 1)
      expect(stats(exporter).destinations[0]?.connected).toBe(false)
    })
    expect(obs.spans).toHaveLength(20)
    await obs.stop()
  })

  it("re-sends unacknowledged batches after obs restarts mid-stream; each is stored once", async () => {
    const obs = new FakeObs()
    const url = await obs.start()
    await withExporter([url], {}, async (exporter) => {
      for (let i = 0; i < 300; i++) exporter.span(span(i))
      await until("first spans stored", () => obs.spans.length === 300)
      // obs crashes: it receives the next batches but dies before committing them.
      const port = obs.port
      const crashing = new FakeObs({ withholdAcks: true })
      await obs.stop()
      await crashing.start(port)
      for (let i = 300; i < 600; i++) exporter.span(span(i))
      await until("batches reached the crashing node", () => crashing.batchesReceived > 0)
      await crashing.stop()
      for (let i = 600; i < 900; i++) exporter.span(span(i))
      await obs.start(port)
      await until(
        "everything stored",
        () => obs.spans.length === 900 && stats(exporter).bufferedBatches === 0
      )
      const s = stats(exporter)
      expect(s.batchesResent).toBeGreaterThan(0)
      expect(s.batchesDropped).toBe(0)
      expect(s.connects).toBe(3)
      expect(obs.duplicates).toBe(0)
    })
    await obs.stop()
  })

  it("drops the oldest batches when the buffer is full, counts them, and stays within the bound", async () => {
    const port = await freePort()
    const obs = new FakeObs()
    const maxBufferBytes = 64 * 1024
    await withExporter(
      [`ws://127.0.0.1:${port}`],
      { maxBufferBytes, maxBatchItems: 50 },
      async (exporter) => {
        let peak = 0
        for (let i = 0; i < 5000; i++) {
          exporter.span(span(i))
          peak = Math.max(peak, stats(exporter).bufferedBytes)
        }
        await Effect.runPromise(exporter.flush)
        const full = stats(exporter)
        expect(full.batchesDropped).toBeGreaterThan(0)
        expect(full.spansDropped).toBe(full.batchesDropped * 50)
        expect(peak).toBeLessThanOrEqual(maxBufferBytes)
        await obs.start(port)
        await until("buffered batches delivered", () => stats(exporter).bufferedBatches === 0)
        const s = stats(exporter)
        expect(obs.spans.length + s.spansDropped).toBe(5000)
        // The newest spans survive: the last one sent is stored.
        expect(obs.spans.some((stored) => stored.correlationId === "c-4999")).toBe(true)
        expect(obs.spans.some((stored) => stored.correlationId === "c-0")).toBe(false)
      }
    )
    await obs.stop()
  })

  it("keeps streaming with slow acks, within the buffer", async () => {
    const obs = new FakeObs({ ackDelayMs: 150 })
    const url = await obs.start()
    await withExporter([url], { maxBatchItems: 100, maxBufferBytes: 8 * 1024 * 1024 }, async (exporter) => {
      for (let round = 0; round < 10; round++) {
        for (let i = 0; i < 200; i++) exporter.span(span(round * 200 + i))
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      expect(stats(exporter).bufferedBatches).toBeGreaterThan(0)
      await until("all acked", () => stats(exporter).bufferedBatches === 0)
      expect(obs.spans).toHaveLength(2000)
      expect(stats(exporter).batchesDropped).toBe(0)
    })
    await obs.stop()
  })

  it("drops a batch obs rejects as invalid instead of retrying it forever", async () => {
    const obs = new FakeObs({ rejectSeqs: new Set([1]) })
    const url = await obs.start()
    await withExporter([url], {}, async (exporter) => {
      exporter.span(span(1))
      await Effect.runPromise(exporter.flush)
      exporter.span(span(2))
      await Effect.runPromise(exporter.flush)
      await until("queue empty", () => stats(exporter).bufferedBatches === 0)
      expect(stats(exporter).batchesRejected).toBe(1)
      expect(obs.spans.map((s) => s.correlationId)).toEqual(["c-2"])
    })
    await obs.stop()
  })

  it("fans out to several obs URLs, each with its own acks", async () => {
    const a = new FakeObs()
    const b = new FakeObs()
    const urls = [await a.start(), await b.start()]
    await withExporter(urls, {}, async (exporter) => {
      for (let i = 0; i < 100; i++) exporter.span(span(i))
      await until("both stored everything", () => a.spans.length === 100 && b.spans.length === 100)
      expect(stats(exporter).destinations.map((d) => d.connected)).toEqual([true, true])
    })
    await a.stop()
    await b.stop()
  })

  it("keeps buffering while obs refuses its token, and delivers once the token is right", async () => {
    const obs = new FakeObs({ token: "s3cret" })
    const url = await obs.start()
    await withExporter([url], { token: "wrong" }, async (exporter) => {
      exporter.span(span(1))
      await Effect.runPromise(exporter.flush)
      await until("refused twice", () => stats(exporter).disconnects >= 2)
      expect(stats(exporter).connects).toBe(0)
      expect(stats(exporter).bufferedBatches).toBe(1)
      expect(obs.spans).toHaveLength(0)
    })
    await withExporter([url], { token: "s3cret" }, async (exporter) => {
      exporter.span(span(2))
      await until("stored", () => obs.spans.length === 1)
      expect(stats(exporter).connects).toBe(1)
    })
    await obs.stop()
  })

  it("survives an obs that answers with garbage: reconnects, no crash", async () => {
    const { WebSocketServer } = await import("ws")
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0, path: "/v1/ingest" })
    await new Promise<void>((resolve) => server.once("listening", () => resolve()))
    server.on("connection", (socket) =>
      socket.on("message", () => socket.send(Buffer.from([0xc1, 0xff, 0x00])))
    )
    const port = (server.address() as { port: number }).port
    await withExporter([`ws://127.0.0.1:${port}`], {}, async (exporter) => {
      exporter.span(span(1))
      await Effect.runPromise(exporter.flush)
      await until("several reconnects", () => stats(exporter).disconnects >= 3)
      expect(stats(exporter).connects).toBe(0)
      expect(stats(exporter).bufferedBatches).toBe(1)
    })
    for (const client of server.clients) client.terminate()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
})
