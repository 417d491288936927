/**
 * One agent connection on `/v1/ingest`, speaking core's wire protocol: hello → welcome, then batches,
 * each acknowledged after its transaction is durable. Every bad frame gets an error frame. Fatal ones
 * (per the protocol: undecodable, oversize, wrong version, bad token, out-of-order) close the
 * connection; after a non-fatal one (`invalid_batch`) it stays usable until the peer has sent
 * `maxStrikes` bad frames in a row.
 */
import { timingSafeEqual } from "node:crypto"
import { WireProtocol } from "@iii/core"
import { Either } from "effect"
import type { WebSocket } from "ws"
import { UnindexableSpan } from "../../Errors.js"
import type { BatchQueue } from "./GroupCommit.js"
import type { NodeCounters } from "./NodeCounters.js"

export interface IngestSettings {
  readonly nodeId: string
  readonly token: string | undefined
  readonly maxFrameBytes: number
  /** Consecutive bad frames after which the connection is closed. */
  readonly maxStrikes: number
}

/** WebSocket close codes used by the ingest endpoint. */
export const closeCodes = { policy: 1008, tooBig: 1009, protocol: 1002 } as const

export const tokensEqual = (expected: string, given: string | undefined): boolean => {
  if (given === undefined) return false
  const a = Buffer.from(expected)
  const b = Buffer.from(given)
  return a.length === b.length && timingSafeEqual(a, b)
}

type ErrorCode = WireProtocol.WireErrorCode

export const handleIngest = (
  ws: WebSocket,
  settings: IngestSettings,
  writer: BatchQueue,
  counters: NodeCounters,
  /** True when the upgrade request already carried a valid `Authorization: Bearer` token. */
  preAuthorized: boolean
): void => {
  let agentId: string | undefined
  let strikes = 0
  let paused = false
  counters.connections++

  const send = (frame: WireProtocol.Frame) => {
    if (ws.readyState === ws.OPEN) ws.send(WireProtocol.encodeFrame(frame))
  }
  /** Sends the error frame; fatal ones (per the protocol's state machine) close the connection. */
  const refuse = (frame: WireProtocol.ErrorFrame) => {
    counters.framesRejected++
    send(frame)
    if (frame.fatal) ws.close(frame.code === "oversize" ? closeCodes.tooBig : closeCodes.policy, frame.code)
    else if (++strikes >= settings.maxStrikes) ws.close(closeCodes.policy, "too many bad frames")
  }
  const fatal = (code: ErrorCode, message: string) => refuse({ type: "error", code, message, fatal: true })

  ws.on("close", () => {
    counters.connections--
  })
  // Protocol violations ws detects itself (a frame far over the size limit, bad framing) arrive here;
  // ws closes the socket (1009, 1002…). Without a listener they would crash the process.
  ws.on("error", () => {
    counters.framesRejected++
  })

  ws.on("message", (data, isBinary) => {
    if (!isBinary) return fatal("malformed", "frames must be binary MessagePack messages")
    const bytes = Buffer.isBuffer(data) ? data : Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data)
    counters.bytesReceived += bytes.length
    const decoded = WireProtocol.decodeFrame(bytes, { maxFrameBytes: settings.maxFrameBytes })
    if (Either.isLeft(decoded)) return refuse(WireProtocol.errorFrameFor(decoded.left))
    const frame = decoded.right
    switch (frame.type) {
      case "hello": {
        if (agentId !== undefined) return fatal("protocol", "hello sent twice")
        if (frame.version !== WireProtocol.PROTOCOL_VERSION)
          return fatal(
            "unsupported_version",
            `protocol version ${frame.version} is not supported; this node speaks ${WireProtocol.PROTOCOL_VERSION}`
          )
        if (settings.token !== undefined && !preAuthorized && !tokensEqual(settings.token, frame.token))
          return fatal("unauthorized", "missing or wrong token")
        agentId = frame.agent.id
        strikes = 0
        return send({
          type: "welcome",
          version: WireProtocol.PROTOCOL_VERSION,
          node: settings.nodeId,
          maxFrameBytes: settings.maxFrameBytes
        })
      }
      case "batch": {
        if (agentId === undefined) return fatal("protocol", "batch before hello")
        strikes = 0
        const seq = frame.seq
        writer.submit({ agentId, seq, spans: frame.spans, metrics: frame.metrics, logs: frame.logs }).then(
          (outcome) => {
            if (outcome === "unavailable") {
              // Not stored durably enough (a cluster without a write quorum): the agent resends it later.
              counters.batchesUnavailable++
              return send({
                type: "error",
                code: "overloaded",
                message:
                  "batch not stored: too few of its owners are reachable for a write quorum; resend it",
                seq,
                fatal: false
              })
            }
            if (outcome === "duplicate") counters.batchesDuplicate++
            send({ type: "ack", seq })
          },
          (error: unknown) => {
            if (error instanceof UnindexableSpan)
              return refuse({
                type: "error",
                code: "invalid_batch",
                message: error.message,
                seq,
                fatal: false
              })
            counters.writeFailures++
            send({
              type: "error",
              code: "internal",
              message: "batch not stored; resend it",
              seq,
              fatal: false
            })
          }
        )
        if (writer.full && !paused) {
          paused = true
          counters.pausedConnections++
          ws.pause()
          writer.onRoom(() => {
            paused = false
            counters.pausedConnections--
            ws.resume()
          })
        }
        return
      }
      default:
        return fatal("protocol", `agents send hello and batch frames, not ${frame.type}`)
    }
  })
}
