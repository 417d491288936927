/**
 * The node-to-node protocol, on `WS /v1/peer` of the node's own port: binary MessagePack frames, one
 * positional array per message. Each node dials every other member and sends its requests over its
 * own connection; the node dialled answers on the same socket.
 *
 * ```
 *  dialer                                   dialled
 *  upgrade with Authorization: Bearer TOKEN ───▶ 401 without it
 *  hello{node, state, settled, layout} ───▶   refused(reason) and close: unknown node, other layout
 *                               ◀───  welcome{node, state, settled, tail}
 *  ping{state, settled, tail} ───▶    (every heartbeat interval)
 *                               ◀───  pong{state, settled, tail}
 *  call(id, op, args) ───▶            (writes, reads, repair; a write names the placement it was
 *                                       planned for and is refused under another one)
 *                               ◀───  reply(id, value) | fail(id, message)
 *  tail(spans) ───▶                   (spans acknowledged by the dialer, for the dialled node's subscribers)
 * ```
 * Both sides tell their status in every ping and pong: `state` (joining, up, leaving, left),
 * `settled` (the placement the node has finished moving data for), `repaired` (the placement it has
 * since checked with anti-entropy) and `tail` (its tail subscribers),
 * so each node knows every other's without a gossip protocol of its own.
 */
import { Packr, Unpackr } from "msgpackr"
import type { RingLayout } from "./Placement.js"

export type NodeState = "joining" | "up" | "leaving" | "left"

export interface Status {
  readonly state: NodeState
  /** Id of the placement this node has finished moving data for ("" for none yet). */
  readonly settled: string
  /** Id of the placement this node has finished an anti-entropy pass for, after every member settled. */
  readonly repaired: string
  /** Its live tail subscribers. */
  readonly tail: number
}

export interface Hello extends Status {
  readonly node: string
  readonly layout: RingLayout
  readonly layoutVersion: number
}

export type PeerFrame =
  | readonly ["hello", Hello]
  | readonly ["welcome", Status & { readonly node: string }]
  | readonly ["refused", string]
  | readonly ["ping", Status]
  | readonly ["pong", Status]
  | readonly ["call", number, string, unknown]
  | readonly ["reply", number, unknown]
  | readonly ["fail", number, string]
  | readonly ["tail", unknown]

// Timestamps are bigints both ways; numbers beyond 32 bits travel as doubles (and stay numbers).
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, int64AsType: "bigint" })

export const encode = (frame: PeerFrame): Buffer => packr.pack(frame)

const kinds = new Set(["hello", "welcome", "refused", "ping", "pong", "call", "reply", "fail", "tail"])

/** Undefined for bytes that are not a peer frame. */
export const decode = (bytes: Uint8Array): PeerFrame | undefined => {
  try {
    const frame = unpackr.unpack(bytes) as unknown
    return Array.isArray(frame) && kinds.has(frame[0] as string) ? (frame as unknown as PeerFrame) : undefined
  } catch {
    return undefined
  }
}

export const path = "/v1/peer"
