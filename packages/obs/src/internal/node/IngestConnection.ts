/**
 * One agent connection on `/v1/ingest`, speaking core's wire protocol: hello → welcome, then batches,
 * each acknowledged after its transaction is durable. The token was checked on the upgrade
 * (`SocketRules`); a peer that has not said hello within the deadline is closed. Every bad frame gets
 * an error frame. Fatal ones (per the protocol: undecodable, oversize, wrong version, out-of-order,
 * and any bad frame before hello) close the connection; after a non-fatal one (`invalid_batch`) it
 * stays usable until the peer has sent `maxStrikes` bad frames in a row.
 */
import { Errors, WireProtocol } from "@iii/core"
import { Either } from "effect"
import type { WebSocket } from "ws"
import { UnindexableSpan } from "../../Errors.js"
import type { SocketRules } from "./Endpoints.js"
import type { BatchQueue } from "./GroupCommit.js"
import type { Dated } from "./IngestWindow.js"
import type { NodeCounters } from "./NodeCounters.js"
import { closeFirmly, helloDeadline } from "./SocketRules.js"

export interface IngestSettings extends Pick<SocketRules, "helloTimeoutMs"> {
  readonly nodeId: string
  readonly maxFrameBytes: number
  /** Consecutive bad frames after which the connection is closed. */
  readonly maxStrikes: number
  /** Why the batch does not fit the node's ingest window (`IngestWindow`), or undefined when it does. */
  readonly misfit: (batch: Dated) => string | undefined
}

/** WebSocket close codes used by the ingest endpoint. */
export const closeCodes = { policy: 1008, tooBig: 1009, protocol: 1002 } as const

type ErrorCode = WireProtocol.WireErrorCode

export const handleIngest = (
  ws: WebSocket,
  settings: IngestSettings,
  writer: BatchQueue,
  counters: NodeCounters,
  /** Called when the node closes the connection for a reason of its own (`hello_timeout`). */
  closedBecause: (reason: string) => void
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
    // Before hello every bad frame is fatal: nothing about the peer is known yet.
    const fatal = frame.fatal || agentId === undefined
    send(fatal === frame.fatal ? frame : { ...frame, fatal })
    if (fatal) closeFirmly(ws, frame.code === "oversize" ? closeCodes.tooBig : closeCodes.policy, frame.code)
    else if (++strikes >= settings.maxStrikes) closeFirmly(ws, closeCodes.policy, "too many bad frames")
  }
  const fatal = (code: ErrorCode, message: string) => refuse({ type: "error", code, message, fatal: true })
  const helloSaid = helloDeadline(ws, settings.helloTimeoutMs, () => {
    closedBecause("hello_timeout")
    fatal("protocol", `no hello within ${settings.helloTimeoutMs} ms`)
  })

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
        helloSaid()
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
        const seq = frame.seq
        const misfit = settings.misfit(frame)
        if (misfit !== undefined)
          return refuse({ type: "error", code: "invalid_batch", message: misfit, seq, fatal: false })
        strikes = 0
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
              message: `batch not stored (${Errors.messageOf(error)}); resend it`,
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
