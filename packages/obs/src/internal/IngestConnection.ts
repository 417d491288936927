/**
 * One agent connection on `/v1/ingest`, speaking core's wire protocol: hello → welcome, then batches,
 * each acknowledged after its transaction is durable. Bad frames get an error frame; the connection
 * stays open for recoverable errors until the peer has sent `maxStrikes` bad frames in a row; an
 * oversize frame, a wrong version, a failed token check or a batch before hello closes it.
 */
import { timingSafeEqual } from "node:crypto"
import { WireProtocol } from "@iii/core"
import { Either } from "effect"
import type { WebSocket } from "ws"
import type { GroupCommit } from "./GroupCommit.js"
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
  writer: GroupCommit,
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
  const fail = (code: ErrorCode, message: string, fatal: boolean, seq?: number) => {
    counters.framesRejected++
    send({ type: "error", code, message, fatal, ...(seq !== undefined && { seq }) })
    if (fatal) ws.close(code === "oversize" ? closeCodes.tooBig : closeCodes.policy, code)
    else if (++strikes >= settings.maxStrikes) ws.close(closeCodes.policy, "too many bad frames")
  }

  ws.on("close", () => {
    counters.connections--
  })

  ws.on("message", (data, isBinary) => {
    if (!isBinary) return fail("protocol", "frames must be binary MessagePack", false)
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer)
    counters.bytesReceived += bytes.length
    const decoded = WireProtocol.decodeFrame(bytes, { maxFrameBytes: settings.maxFrameBytes })
    if (Either.isLeft(decoded)) {
      const e = decoded.left
      return fail(e.code, e.message, e.code === "oversize" || e.code === "unsupported_version")
    }
    const frame = decoded.right
    switch (frame.type) {
      case "hello": {
        if (agentId !== undefined) return fail("protocol", "hello sent twice", false)
        if (frame.version !== WireProtocol.PROTOCOL_VERSION)
          return fail(
            "unsupported_version",
            `protocol version ${frame.version} is not supported; this node speaks ${WireProtocol.PROTOCOL_VERSION}`,
            true
          )
        if (settings.token !== undefined && !preAuthorized && !tokensEqual(settings.token, frame.token))
          return fail("unauthorized", "missing or wrong token", true)
        agentId = frame.agent.id
        strikes = 0
        return send({ type: "welcome", version: WireProtocol.PROTOCOL_VERSION, node: settings.nodeId })
      }
      case "batch": {
        if (agentId === undefined) return fail("protocol", "batch before hello", true)
        strikes = 0
        const seq = frame.seq
        writer.submit({ agentId, seq, spans: frame.spans, metrics: frame.metrics, logs: frame.logs }).then(
          (outcome) => {
            if (outcome === "duplicate") counters.batchesDuplicate++
            send({ type: "ack", seq })
          },
          () => {
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
        return fail("protocol", `agents may send hello and batch frames, not ${frame.type}`, false)
    }
  })
}
