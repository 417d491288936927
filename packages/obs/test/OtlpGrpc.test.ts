/**
 * OTLP/gRPC ingest: OpenTelemetry's gRPC trace exporter sends to a real node's OTLP/gRPC listener
 * (on a free port: port 0 turns the listener off), and bad calls get the OTLP status codes.
 */
import * as grpc from "@grpc/grpc-js"
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-grpc"
import { Option, Redacted } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { freePort, getJson, type RunningNode, startNode } from "./fixtures/Node.js"
import { sdkTracer, traceBody } from "./fixtures/Otlp.js"

const token = "otlp-grpc-token"
const maxFrameBytes = 64 * 1024

const bearer = (value: string) => {
  const metadata = new grpc.Metadata()
  metadata.set("authorization", `Bearer ${value}`)
  return metadata
}

/** One raw Export call (bytes as they are); its error code, or 0 (OK). */
const rawExport = (port: number, bytes: Buffer, metadata: grpc.Metadata, options: grpc.ClientOptions = {}) =>
  new Promise<number>((resolve) => {
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options)
    client.makeUnaryRequest(
      "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
      (b: Buffer) => b,
      (b: Buffer) => b,
      bytes,
      metadata,
      (error) => {
        client.close()
        resolve(error?.code ?? 0)
      }
    )
  })

describe("OTLP/gRPC ingest", () => {
  let node: RunningNode
  let port: number
  beforeAll(async () => {
    port = await freePort()
    node = await startNode({ token: Option.some(Redacted.make(token)), otlpGrpcPort: port, maxFrameBytes })
  })
  afterAll(() => node.stop())

  const traceStatus = async (traceId: string) =>
    (await getJson(`${node.url}/v1/traces/${traceId}`, { authorization: `Bearer ${token}` })).status

  it("listens where it was told, and stores the SDK's spans from the gRPC exporter", async () => {
    expect(node.otlpGrpcPort).toEqual(Option.some(port))
    const sdk = sdkTracer()
    const root = sdk.tracer.startSpan("grpc root", { attributes: { "order.id": "o-1" } })
    sdk.tracer.startSpan("grpc child", {}, sdk.under(root)).end()
    root.end()
    const spans = await sdk.finished()
    const exporter = new OTLPTraceExporter({ url: `http://127.0.0.1:${port}`, metadata: bearer(token) })
    const result = await new Promise<{ code: number }>((resolve) => exporter.export(spans, resolve))
    expect(result.code).toBe(0)
    await exporter.shutdown()
    const r = await getJson(`${node.url}/v1/traces/${root.spanContext().traceId}`, {
      authorization: `Bearer ${token}`
    })
    expect(r.body.spans).toHaveLength(2)
    expect(r.body.spans).toContainEqual(
      expect.objectContaining({
        name: "grpc root",
        service: "payments",
        attributes: expect.objectContaining({ "order.id": "o-1" })
      })
    )
    await sdk.shutdown()
  })

  it("answers bad calls with OTLP's status codes and stores nothing of them", async () => {
    const sdk = sdkTracer()
    const probe = sdk.tracer.startSpan("must not be stored")
    probe.end()
    const good = Buffer.from(traceBody(await sdk.finished()))
    expect(await rawExport(port, good, new grpc.Metadata())).toBe(grpc.status.UNAUTHENTICATED)
    expect(await rawExport(port, good, bearer("wrong"))).toBe(grpc.status.UNAUTHENTICATED)
    expect(await rawExport(port, Buffer.from("not protobuf at all"), bearer(token))).toBe(
      grpc.status.INVALID_ARGUMENT
    )
    expect(await rawExport(port, Buffer.concat([good, Buffer.alloc(maxFrameBytes)]), bearer(token))).toBe(
      grpc.status.RESOURCE_EXHAUSTED
    )
    // Compressed, the message is small; inflated, it is over the limit.
    const gzipped = { "grpc.default_compression_algorithm": grpc.compressionAlgorithms.gzip }
    expect(
      await rawExport(port, Buffer.concat([good, Buffer.alloc(16 * maxFrameBytes)]), bearer(token), gzipped)
    ).toBe(grpc.status.RESOURCE_EXHAUSTED)
    expect(await traceStatus(probe.spanContext().traceId)).toBe(404)
    expect(await rawExport(port, good, bearer(token), gzipped)).toBe(0)
    expect(await traceStatus(probe.spanContext().traceId)).toBe(200)
    await sdk.shutdown()
  })
})
