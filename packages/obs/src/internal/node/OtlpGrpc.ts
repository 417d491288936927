/**
 * OTLP/gRPC: the trace, logs and metrics collector services' `Export` on a port of their own
 * (`ObsNodeConfig.otlpGrpcPort`), over @grpc/grpc-js, plaintext, with the node's token as
 * `authorization: Bearer TOKEN` metadata. Messages pass through grpc-js as bytes and are decoded by
 * `OtlpProto` like OTLP/HTTP's protobuf bodies; everything after that is `OtlpIngest`. grpc-js caps
 * each message at the node's `maxFrameBytes`, inflated size included (it stops inflating there).
 *
 * Status codes, as the OTLP specification gives them: OK (with a partial success when items were
 * left out), INVALID_ARGUMENT (undecodable), UNAUTHENTICATED, RESOURCE_EXHAUSTED (over the size
 * limit: grpc-js), UNAVAILABLE (back-pressure, store lost or no quorum: retryable).
 */
import * as grpc from "@grpc/grpc-js"
import { Errors } from "@iii/core"
import type * as Proto from "../otlp/OtlpProto.js"
import { admission, ingest, type OtlpParts } from "./OtlpIngest.js"
import { tokensEqual } from "./SocketRules.js"

const services = {
  traces: "opentelemetry.proto.collector.trace.v1.TraceService",
  logs: "opentelemetry.proto.collector.logs.v1.LogsService",
  metrics: "opentelemetry.proto.collector.metrics.v1.MetricsService"
} as const

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** `Export` as grpc-js sees it: bytes in, bytes out (protobufjs does the protobuf). */
const exportMethod = (signal: Proto.Signal): grpc.ServiceDefinition => ({
  Export: {
    path: `/${services[signal]}/Export`,
    requestStream: false,
    responseStream: false,
    requestSerialize: asBuffer,
    requestDeserialize: (bytes: Buffer) => bytes,
    responseSerialize: asBuffer,
    responseDeserialize: (bytes: Buffer) => bytes
  }
})

const bearer = (metadata: grpc.Metadata): string | undefined => {
  const value = metadata.get("authorization")[0]
  return typeof value === "string" ? /^bearer[ \t]+(.+)$/i.exec(value)?.[1]?.trim() : undefined
}

const handler =
  (signal: Proto.Signal, parts: OtlpParts): grpc.handleUnaryCall<Buffer, Uint8Array> =>
  (call, callback) => {
    const fail = (code: grpc.status, details: string) => {
      parts.counters.otlpAnswered(
        signal,
        code === grpc.status.UNAUTHENTICATED ? 401 : code === grpc.status.INVALID_ARGUMENT ? 400 : 503
      )
      callback({ code, details })
    }
    if (parts.token !== undefined && !tokensEqual(parts.token, bearer(call.metadata)))
      return fail(grpc.status.UNAUTHENTICATED, "missing or wrong bearer token")
    const busy = admission(parts)
    if (busy !== undefined) return fail(grpc.status.UNAVAILABLE, busy.message)
    ingest(signal, "protobuf", call.request, parts).then(
      (outcome) => {
        if (outcome._tag === "Refused")
          return fail(
            outcome.refusal === "undecodable" ? grpc.status.INVALID_ARGUMENT : grpc.status.UNAVAILABLE,
            outcome.message
          )
        parts.counters.otlpAnswered(signal, 200)
        callback(null, outcome.response)
      },
      (error: unknown) => fail(grpc.status.UNAVAILABLE, Errors.messageOf(error))
    )
  }

/** Starts the OTLP/gRPC server on host:port; resolves with it and the port it bound. */
export const listen = (
  parts: OtlpParts,
  host: string,
  port: number
): Promise<{ readonly server: grpc.Server; readonly port: number }> => {
  const server = new grpc.Server({
    "grpc.max_receive_message_length": parts.maxBodyBytes,
    "grpc.max_send_message_length": 1024 * 1024
  })
  for (const signal of ["traces", "logs", "metrics"] as const)
    server.addService(exportMethod(signal), { Export: handler(signal, parts) })
  const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`
  return new Promise((resolve, reject) =>
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error === null ? resolve({ server, port: bound }) : reject(error)
    )
  )
}

/** Stops the server: calls in progress get a second to finish, then are cancelled. */
export const close = (server: grpc.Server): Promise<void> =>
  new Promise((resolve) => {
    const timer = setTimeout(() => server.forceShutdown(), 1_000)
    server.tryShutdown(() => {
      clearTimeout(timer)
      resolve()
    })
  })
