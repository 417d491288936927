/**
 * A stand-in obs node for exporter tests: a real WebSocket server on 127.0.0.1 speaking the wire
 * protocol, storing batches once per (agent id, seq) as obs does, with knobs for slow or missing acks.
 */
import type { AddressInfo } from "node:net"
import { type Telemetry, WireProtocol } from "@iii/core"
import { Either } from "effect"
import { WebSocketServer } from "ws"

export interface FakeObsOptions {
  /** Delay before each ack (slow durable commits). */
  ackDelayMs?: number
  /** Receive batches but never ack them (crash before commit). */
  withholdAcks?: boolean
  /** Answer these seqs with a non-fatal invalid_batch error instead of storing them. */
  rejectSeqs?: ReadonlySet<number>
  /** Delay before the welcome (a node slow to answer the handshake). */
  welcomeDelayMs?: number
  /** Require this token on the upgrade (`Authorization: Bearer`), as obs does: others are answered 401. */
  token?: string
}

export class FakeObs {
  readonly stored = new Map<string, Telemetry.Span>()
  readonly logs: Array<Telemetry.LogRecord> = []
  readonly metrics: Array<Telemetry.MetricPoint> = []
  readonly seqs = new Set<string>()
  batchesReceived = 0
  duplicates = 0
  hellos = 0
  private server: WebSocketServer | undefined

  constructor(readonly options: FakeObsOptions = {}) {}

  get spans(): Array<Telemetry.Span> {
    return [...this.stored.values()]
  }

  /** Listens on `port` (0: any free port); returns the base URL an exporter is given. */
  async start(port = 0): Promise<string> {
    const token = this.options.token
    const server = new WebSocketServer({
      host: "127.0.0.1",
      port,
      path: "/v1/ingest",
      ...(token !== undefined && {
        verifyClient: (info: { req: { headers: { authorization?: string | undefined } } }) =>
          info.req.headers.authorization === `Bearer ${token}`
      })
    })
    await new Promise<void>((resolve, reject) => {
      server.once("listening", resolve)
      server.once("error", reject)
    })
    this.server = server
    server.on("connection", (socket) => {
      let agentId: string | undefined
      socket.on("message", (data: Buffer) => {
        const decoded = WireProtocol.decodeFrame(data)
        if (Either.isLeft(decoded)) {
          socket.send(WireProtocol.encodeFrame(WireProtocol.errorFrameFor(decoded.left)))
          return
        }
        const frame = decoded.right
        if (frame.type === "hello") {
          this.hellos++
          agentId = frame.agent.id
          const welcome = () =>
            socket.send(
              WireProtocol.encodeFrame({
                type: "welcome",
                version: WireProtocol.PROTOCOL_VERSION,
                node: "fake"
              })
            )
          if (this.options.welcomeDelayMs === undefined) welcome()
          else setTimeout(welcome, this.options.welcomeDelayMs)
        } else if (frame.type === "batch" && agentId !== undefined) {
          this.batchesReceived++
          if (this.options.rejectSeqs?.has(frame.seq) === true) {
            socket.send(
              WireProtocol.encodeFrame({
                type: "error",
                code: "invalid_batch",
                message: "rejected by test",
                seq: frame.seq,
                fatal: false
              })
            )
            return
          }
          if (this.options.withholdAcks === true) return
          const key = `${agentId}/${frame.seq}`
          if (this.seqs.has(key)) this.duplicates++
          else {
            this.seqs.add(key)
            for (const span of frame.spans) this.stored.set(span.spanId, span)
            this.logs.push(...frame.logs)
            this.metrics.push(...frame.metrics)
          }
          const ack = () => {
            if (socket.readyState === socket.OPEN)
              socket.send(WireProtocol.encodeFrame({ type: "ack", seq: frame.seq }))
          }
          if (this.options.ackDelayMs === undefined) ack()
          else setTimeout(ack, this.options.ackDelayMs)
        }
      })
    })
    return `ws://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  get port(): number {
    const address = this.server?.address()
    if (typeof address !== "object" || address === null) throw new Error("fake obs is not listening")
    return address.port
  }

  /** Stops abruptly, as a crashed node would: connections are cut, nothing more is acked. */
  async stop(): Promise<void> {
    const server = this.server
    if (server === undefined) return
    this.server = undefined
    for (const client of server.clients) client.terminate()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

/** Polls `condition` every 10 ms until true; fails with `what` after `timeoutMs`. */
export const until = async (what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

export { freePort } from "../../../core/test/fixtures/freePort.js"
