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
 *  call(id, op, args[, bulk]) ───▶    (writes, reads, repair; a write names the placement it was
 *                                       planned for and is refused under another one, and carries
 *                                       its plans as bulk)
 *                               ◀───  reply(id, value) | fail(id, message)
 *  tail(spans) ───▶                   (spans acknowledged by the dialer, for the dialled node's subscribers)
 * ```
 * Both sides tell their status in every ping and pong: `state` (joining, up, leaving, left),
 * `settled` (the placement the node has finished moving data for), `repaired` (the placement it has
 * since checked with anti-entropy) and `tail` (its tail subscribers),
 * so each node knows every other's without a gossip protocol of its own.
 *
 * A call's bulk (a write's plans: the round's bytes) is the frame's last element, a `bin 32` sent as
 * a WebSocket fragment of its own after the packed head (`encodeCallHead`): a round's bulk is built
 * once, whatever the number of peers it goes to, and is never copied into a frame.
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
  | readonly ["call", number, string, unknown, Uint8Array?]
  | readonly ["reply", number, unknown]
  | readonly ["fail", number, string]
  | readonly ["tail", unknown]

// Timestamps are bigints both ways; numbers beyond 32 bits travel as doubles (and stay numbers).
const packr = new Packr({ useRecords: false })
const unpackr = new Unpackr({ useRecords: false, int64AsType: "bigint" })

export const encode = (frame: PeerFrame): Buffer => packr.pack(frame)

/**
 * The head of `["call", id, op, args, bulk]`: everything up to the bulk's bytes, which follow it
 * unchanged (the frame is the head and the bulk concatenated).
 */
export const encodeCallHead = (id: number, op: string, args: unknown, bulkLength: number): Buffer => {
  const packed = packr.pack(["call", id, op, args])
  // The 4-element array's fixarray marker becomes a 5-element one; the bulk is a `bin 32`.
  const head = Buffer.allocUnsafe(packed.length + 5)
  packed.copy(head)
  head[0] = 0x95
  head[packed.length] = 0xc6
  head.writeUInt32BE(bulkLength, packed.length + 1)
  return head
}

/** Byte strings as one MessagePack array of `bin 32`s (a write's bulk, a hint), copied once. */
export const packByteStrings = (parts: ReadonlyArray<Uint8Array>): Uint8Array => {
  const out = Buffer.allocUnsafe(5 + parts.reduce((n, p) => n + 5 + p.length, 0))
  out[0] = 0xdd
  out.writeUInt32BE(parts.length, 1)
  let at = 5
  for (const part of parts) {
    out[at] = 0xc6
    out.writeUInt32BE(part.length, at + 1)
    out.set(part, at + 5)
    at += 5 + part.length
  }
  return out
}

/** How many byte strings a `packByteStrings` bulk holds, from its head alone; throws on anything else. */
export const countByteStrings = (bytes: Uint8Array): number => {
  if (bytes.length < 5 || bytes[0] !== 0xdd) throw new Error("not a list of byte strings")
  return new DataView(bytes.buffer, bytes.byteOffset, 5).getUint32(1)
}

/** The byte strings of `packByteStrings` (views into `bytes`); throws on anything else. */
export const unpackByteStrings = (bytes: Uint8Array): ReadonlyArray<Uint8Array> => {
  const parts = unpackr.unpack(bytes) as unknown
  if (!Array.isArray(parts) || !parts.every((p) => p instanceof Uint8Array))
    throw new Error("not a list of byte strings")
  return parts
}

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
