/**
 * OTLP/HTTP on the node's port: `POST /v1/traces`, `/v1/logs`, `/v1/metrics`, protobuf or JSON,
 * gzip or not, answered as the OTLP specification says (`OtlpIngest` does the rest). The body is read
 * with a byte cap (the node's `maxFrameBytes`, on the bytes received and again on the bytes inflated,
 * so a small gzip body that inflates past it is refused as soon as it does, never inflated whole).
 * Error answers carry a google.rpc.Status in the request's format.
 */
import type { IncomingMessage, ServerResponse } from "node:http"
import { createGunzip } from "node:zlib"
import * as Proto from "../otlp/OtlpProto.js"
import { admission, ingest, type OtlpParts, type Refusal, type Refused } from "./OtlpIngest.js"

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
const grpc = { invalidArgument: 3, resourceExhausted: 8, unavailable: 14 } as const

/** A refusal as HTTP status, gRPC code and Retry-After (seconds) for the retryable ones. */
const refusals: Readonly<Record<Refusal, readonly [number, number, string | undefined]>> = {
  overloaded: [429, grpc.resourceExhausted, "1"],
  storeLost: [503, grpc.unavailable, "30"],
  unavailable: [503, grpc.unavailable, "5"],
  failed: [503, grpc.unavailable, "5"],
  undecodable: [400, grpc.invalidArgument, undefined]
}

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
        // Stop inflating; what the client still sends is read and dropped until the answer closes.
        req.unpipe()
        inflater?.destroy()
      }
      resolve(body)
    }
    req.on("data", (chunk: Buffer) => {
      if (settled) return
      received += chunk.length
      if (received > max) settle(tooLarge)
      else if (inflater === undefined) chunks.push(chunk)
    })
    req.on("error", () => settle({ status: 400, message: "the request was cut off" }))
    req.on("close", () => {
      if (!req.complete) settle({ status: 400, message: "the request was cut off" })
    })
    if (inflater === undefined) {
      req.on("end", () => settle({ bytes: Buffer.concat(chunks) }))
      return
    }
    req.pipe(inflater)
    inflater.on("data", (chunk: Buffer) => {
      if (settled) return
      inflated += chunk.length
      if (inflated > max) settle(tooLarge)
      else chunks.push(chunk)
    })
    inflater.on("error", (e) => settle({ status: 400, message: `the body is not valid gzip: ${e.message}` }))
    inflater.on("end", () => settle({ bytes: Buffer.concat(chunks) }))
  })
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
  const refuseWhole = (outcome: Refused, before: boolean) => {
    const [status, code, retryAfter] = refusals[outcome.refusal]
    // Refused before its body was read: the connection is not reused.
    const headers = {
      ...(retryAfter && { "retry-after": retryAfter }),
      ...(before && { connection: "close" })
    }
    return refuse(status, code, outcome.message, headers)
  }
  const busy = admission(parts)
  if (busy !== undefined) return refuseWhole(busy, true)
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
  const outcome = await ingest(signal, format, body.bytes, parts)
  if (outcome._tag === "Refused") return refuseWhole(outcome, false)
  answer(200, outcome.response)
}
