/**
 * OTLP/HTTP on the node's port: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`, protobuf or JSON,
 * gzip or not, answered as the OTLP specification says. The body is read with a byte cap (the node's
 * `maxFrameBytes`, on the bytes received and again on the bytes inflated, so a small gzip body that
 * inflates past it is refused as soon as it does, never inflated whole), decoded and mapped
 * (`internal/otlp/`), then written through the same group commit as agent batches, so the answer
 * comes after the durable commit. Items outside the ingest window or that the store cannot index are
 * left out and reported as a partial success; anything refused whole (undecodable, oversize, wrong
 * type, back-pressure) stores nothing of the request.
 *
 * A request becomes one batch of a pseudo-agent named after a hash of its signal and inflated body,
 * sequence 1: spans are stored once by trace and span id, logs, metric points and RED parts once per
 * (agent, seq, index), so a retried request (same body) stores nothing twice.
 */
import { createHash } from "node:crypto"
import type { IncomingMessage, ServerResponse } from "node:http"
import type { Readable } from "node:stream"
import { createGunzip } from "node:zlib"
import type { Telemetry } from "@iii/core"
import { Either } from "effect"
import { UnindexableSpan } from "../../Errors.js"
import type { IngestBatch } from "../../Store.js"
import { type Mapped, mapLogs, mapMetrics, mapTraces, type Rejections } from "../otlp/OtlpMap.js"
import * as Proto from "../otlp/OtlpProto.js"
import type { BatchQueue } from "./GroupCommit.js"
import type { Dated } from "./IngestWindow.js"
import type { NodeCounters } from "./NodeCounters.js"

export interface OtlpParts {
  /** Largest body, received and inflated, in bytes. */
  readonly maxBodyBytes: number
  /** Why items do not fit the ingest window (`IngestWindow`), or undefined when they do. */
  readonly misfit: (batch: Dated) => string | undefined
  readonly writer: BatchQueue
  /** Why the store can no longer keep what it acknowledges, once that happened. */
  readonly storeFailure: () => string | undefined
  readonly nowMs: () => number
  readonly logError: (message: string) => void
  readonly counters: NodeCounters
}

/** The signal a path takes, or undefined. */
export const signalOf = (path: string): Proto.Signal | undefined =>
  path === "/v1/traces"
    ? "traces"
    : path === "/v1/logs"
      ? "logs"
      : path === "/v1/metrics"
        ? "metrics"
        : undefined

/** gRPC status codes, which OTLP/HTTP's error bodies (google.rpc.Status) carry. */
const grpc = { invalidArgument: 3, resourceExhausted: 8, unavailable: 14, internal: 13 } as const

type Body = { readonly bytes: Buffer } | { readonly status: 400 | 413 | 415; readonly message: string }

/**
 * The body, inflated when gzip, refused (413) as soon as it passes `max` bytes either way: the
 * inflater is destroyed there, so a decompression bomb costs `max` bytes of inflation at most.
 */
const readBody = (req: IncomingMessage, max: number): Promise<Body> => {
  const encoding = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase()
  if (encoding !== "gzip" && encoding !== "identity")
    return Promise.resolve({
      status: 415,
      message: `content encoding ${encoding} is not supported (gzip or none)`
    })
  const tooLarge = { status: 413, message: `the body is larger than this node takes (${max} bytes)` } as const
  const declared = Number(req.headers["content-length"])
  if (declared > max) return Promise.resolve(tooLarge)
  return new Promise((resolve) => {
    const chunks: Array<Buffer> = []
    let received = 0
    let inflated = 0
    let settled = false
    const inflater = encoding === "gzip" ? createGunzip() : undefined
    const settle = (body: Body) => {
      if (settled) return
      settled = true
      if ("status" in body) {
        inflater?.destroy()
        req.unpipe()
      }
      resolve(body)
    }
    req.on("data", (chunk: Buffer) => {
      received += chunk.length
      if (received > max) settle(tooLarge)
    })
    req.on("error", () => settle({ status: 400, message: "the request was cut off" }))
    const source: Readable = inflater === undefined ? req : req.pipe(inflater)
    if (inflater !== undefined) {
      inflater.on("data", (chunk: Buffer) => {
        inflated += chunk.length
        if (inflated > max) settle(tooLarge)
        else chunks.push(chunk)
      })
      inflater.on("error", (e) =>
        settle({ status: 400, message: `the body is not valid gzip: ${e.message}` })
      )
    } else req.on("data", (chunk: Buffer) => chunks.push(chunk))
    source.on("end", () => settle({ bytes: Buffer.concat(chunks) }))
  })
}

interface Prepared {
  readonly batch: IngestBatch
  readonly rejections: Rejections
}

/** Leaves out the items outside the ingest window, one by one (only when the batch as a whole misfits). */
const withinWindow = <A>(
  mapped: Mapped<A>,
  dated: (items: ReadonlyArray<A>) => Dated,
  misfit: OtlpParts["misfit"]
): Mapped<A> => {
  if (misfit(dated(mapped.items)) === undefined) return mapped
  const out: Mapped<A> = { items: [], indexes: [], rejections: mapped.rejections }
  mapped.items.forEach((item, i) => {
    const why = misfit(dated([item]))
    if (why === undefined) {
      out.items.push(item)
      out.indexes.push(mapped.indexes[i] ?? i)
    } else out.rejections.add(why.replace(/^\w+\[0\]/, (m) => m.replace("[0]", "")))
  })
  return out
}

const none = { spans: [], logs: [], metrics: [] }

/** The request as one batch (see the module doc), its items mapped and windowed. */
const prepare = <S extends Proto.Signal>(
  signal: S,
  request: Proto.Requests[S],
  body: Buffer,
  parts: OtlpParts
): Prepared => {
  const agentId = `otlp-${createHash("sha256").update(signal).update(body).digest("hex").slice(0, 32)}`
  const base = { agentId, seq: 1, ...none }
  switch (signal) {
    case "traces": {
      const m = withinWindow(
        mapTraces(request as Proto.TracesRequest),
        (spans) => ({ ...none, spans }),
        parts.misfit
      )
      return { batch: { ...base, spans: m.items }, rejections: m.rejections }
    }
    case "logs": {
      const mapped = mapLogs(request as Proto.LogsRequest, BigInt(parts.nowMs()) * 1_000_000n)
      const m = withinWindow(mapped, (logs) => ({ ...none, logs }), parts.misfit)
      return { batch: { ...base, logs: m.items, logIndexes: m.indexes }, rejections: m.rejections }
    }
    default: {
      const m = withinWindow(
        mapMetrics(request as Proto.MetricsRequest),
        (metrics) => ({ ...none, metrics }),
        parts.misfit
      )
      return { batch: { ...base, metrics: m.items, metricIndexes: m.indexes }, rejections: m.rejections }
    }
  }
}

/**
 * Submits the batch; a span the store cannot index is left out (and counted) and the rest submitted
 * again, so one span with an oversized service name does not cost the others.
 */
const submit = async (
  writer: BatchQueue,
  batch: IngestBatch,
  rejections: Rejections
): Promise<"stored" | "duplicate" | "unavailable"> => {
  for (;;) {
    try {
      return await writer.submit(batch)
    } catch (error) {
      const at = error instanceof UnindexableSpan ? /^spans\[(\d+)\]/.exec(error.path) : null
      if (at === null || !(error instanceof UnindexableSpan)) throw error
      const index = Number(at[1])
      rejections.add(
        error.message.replace(/^spans\[\d+\]/, `span ${(batch.spans[index] as Telemetry.Span).spanId}`)
      )
      batch = { ...batch, spans: batch.spans.filter((_, i) => i !== index) }
    }
  }
}

/** Answers an OTLP export request on `signal`'s path. */
export const handleOtlp = async (
  req: IncomingMessage,
  res: ServerResponse,
  signal: Proto.Signal,
  parts: OtlpParts
): Promise<void> => {
  const format = Proto.formatOf(req.headers["content-type"])
  const answer = (status: number, body: Uint8Array, headers: Readonly<Record<string, string>> = {}) => {
    res.writeHead(status, {
      "content-type": Proto.contentTypes[format ?? "json"],
      "content-length": body.length,
      ...headers
    })
    res.end(body)
    parts.counters.otlpAnswered(signal, status)
  }
  const refuse = (
    status: number,
    code: number,
    message: string,
    headers: Readonly<Record<string, string>> = {}
  ) => answer(status, Proto.encodeStatus(format ?? "json", code, message), headers)
  if (format === undefined)
    return refuse(
      415,
      grpc.invalidArgument,
      `content type ${JSON.stringify(req.headers["content-type"] ?? "")} is not OTLP's: send application/x-protobuf or application/json`,
      { connection: "close" }
    )
  const failure = parts.storeFailure()
  if (failure !== undefined)
    return refuse(503, grpc.unavailable, `this node stores nothing more: ${failure}`, {
      "retry-after": "30",
      connection: "close"
    })
  if (parts.writer.full)
    return refuse(429, grpc.resourceExhausted, "the node's write queue is full; retry later", {
      "retry-after": "1",
      connection: "close"
    })
  const body = await readBody(req, parts.maxBodyBytes)
  if ("status" in body)
    return refuse(
      body.status,
      body.status === 413 ? grpc.resourceExhausted : grpc.invalidArgument,
      body.message,
      {
        connection: "close"
      }
    )
  const decoded = Proto.decodeRequest(signal, format, body.bytes)
  if (Either.isLeft(decoded)) return refuse(400, grpc.invalidArgument, decoded.left)
  const { batch, rejections } = prepare(signal, decoded.right, body.bytes, parts)
  const items = batch.spans.length + batch.logs.length + batch.metrics.length
  let outcome: "stored" | "duplicate" | "unavailable" = "stored"
  if (items > 0)
    try {
      outcome = await submit(parts.writer, batch, rejections)
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      parts.logError(`POST /v1/${signal} answered 503: ${message}`)
      return refuse(503, grpc.unavailable, `not stored (${message}); retry`, { "retry-after": "5" })
    }
  if (outcome === "unavailable")
    return refuse(
      503,
      grpc.unavailable,
      "not stored: too few of its owners are reachable for a write quorum; retry",
      {
        "retry-after": "5"
      }
    )
  answer(
    200,
    Proto.encodeResponse(
      signal,
      format,
      rejections.count === 0 ? undefined : { count: rejections.count, message: rejections.message() }
    )
  )
  parts.counters.otlpLeftOut(signal, rejections.count)
}
