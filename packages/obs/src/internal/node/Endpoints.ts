/**
 * What the node's port answers with (`Answer`), and what a layer under the node adds to it
 * (`Endpoints`: the cluster's `/v1/peer` and `/v1/cluster`, its metrics). Types only, so the node's
 * public declarations need nothing of the socket libraries.
 */
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"

export interface Answer {
  readonly status: number
  readonly contentType: string
  readonly body: string
  readonly headers?: Readonly<Record<string, string>>
}

/**
 * The node checks the token before `answer` (not before `upgrade`: the extension authenticates its
 * WebSockets itself).
 */
export interface Endpoints {
  /** Answers a request the node does not serve; undefined when it is not the extension's either. */
  readonly answer: (method: string, url: URL, req: IncomingMessage) => Promise<Answer> | undefined
  /** Takes a WebSocket upgrade the node does not serve; false when it is not the extension's either. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
  /** More Prometheus text for `/metrics`. */
  readonly metrics: () => Promise<string>
}
