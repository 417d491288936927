/**
 * What the node's port answers with (`Answer`), what a layer under the node adds to it
 * (`Endpoints`: the cluster's `/v1/peer` and `/v1/cluster`, its metrics), and the socket rules the
 * node lends it for its WebSockets (`NodeSockets`). Types only, so the node's public declarations
 * need nothing of the socket libraries.
 */
import type { IncomingMessage } from "node:http"
import type { Duplex } from "node:stream"
import type { NodeCounters } from "./NodeCounters.js"

/** The rules every WebSocket on the node's port obeys (`SocketRules.ts` applies them). */
export interface SocketRules {
  /** Token every upgrade must carry; undefined: upgrades are open. */
  readonly token: string | undefined
  /** A socket that has not said hello within this many milliseconds is closed. */
  readonly helloTimeoutMs: number
  /** Ping period in milliseconds; a peer silent for a whole period is terminated. */
  readonly pingIntervalMs: number
}

/** The node's socket rules and counters: a layer's own WebSocket endpoints obey and count them too. */
export interface NodeSockets {
  readonly rules: SocketRules
  readonly counters: NodeCounters
}

export interface Answer {
  readonly status: number
  readonly contentType: string
  readonly body: string
  readonly headers?: Readonly<Record<string, string>>
}

/**
 * The node checks the token before `answer` (not before `upgrade`: the extension admits its
 * WebSockets itself, under the rules of `NodeSockets`).
 */
export interface Endpoints {
  /** Answers a request the node does not serve; undefined when it is not the extension's either. */
  readonly answer: (method: string, url: URL, req: IncomingMessage) => Promise<Answer> | undefined
  /** Takes a WebSocket upgrade the node does not serve; false when it is not the extension's either. */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean
  /** More Prometheus text for `/metrics`. */
  readonly metrics: () => Promise<string>
}
