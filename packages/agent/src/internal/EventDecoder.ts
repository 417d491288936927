/**
 * Decodes the addon's batch buffers (layout: bpf/iii_capture.h, numbers: EventLayout.ts) into
 * CaptureEvents. Hot path: one DataView per batch, no copies (payloads are views), addresses
 * formatted through a small cache since a process talks to few distinct peers, and events decoded
 * one at a time as the consumer iterates (`eventsOf`): a backlog batch of thousands of records never
 * exists as thousands of objects at once, which would outlive V8's young generation.
 */
import type { CaptureEvent, Syscall } from "../CaptureEvent.js"
import {
  BatchHeader,
  DataEvent,
  EventHeader,
  ForkEvent,
  Kind,
  kinds,
  LostEvent,
  OpenEvent,
  RECORD_PREFIX,
  syscalls,
  TraceEvent,
  TraceRole
} from "./EventLayout.js"

const H = EventHeader.fields
const D = DataEvent.fields
const C = OpenEvent.fields

const T = TraceEvent.fields

/** ASCII text of `length` bytes (the kernel writes hex digits; anything else fails the span's checks). */
const ascii = (view: DataView, at: number, length: number): string =>
  String.fromCharCode(...new Uint8Array(view.buffer, view.byteOffset + at, length))

const hex = (view: DataView, at: number): string => view.getUint16(at).toString(16)

/** RFC 5952 text of a 16-byte IPv6 address (longest run of zero groups as "::"). */
const formatIpv6 = (view: DataView, at: number): string => {
  let bestStart = -1
  let bestLength = 0
  let runStart = -1
  for (let group = 0; group <= 8; group++) {
    const zero = group < 8 && view.getUint16(at + group * 2) === 0
    if (zero && runStart < 0) runStart = group
    if (!zero && runStart >= 0) {
      if (group - runStart > bestLength && group - runStart > 1) {
        bestStart = runStart
        bestLength = group - runStart
      }
      runStart = -1
    }
  }
  const parts: Array<string> = []
  for (let group = 0; group < 8; group++) {
    if (group === bestStart) {
      parts.push(group === 0 ? ":" : "")
      group += bestLength - 1
      if (group === 7) parts.push("")
      continue
    }
    parts.push(hex(view, at + group * 2))
  }
  return parts.join(":")
}

const formatIpv4 = (view: DataView, at: number): string =>
  `${view.getUint8(at)}.${view.getUint8(at + 1)}.${view.getUint8(at + 2)}.${view.getUint8(at + 3)}`

/** ::ffff:a.b.c.d */
const isV4Mapped = (view: DataView, at: number): boolean =>
  view.getUint32(at) === 0 && view.getUint32(at + 4) === 0 && view.getUint32(at + 8) === 0xffff

const addressCache = new Map<string, string>()
const ADDRESS_CACHE_LIMIT = 4096

const formatAddress = (view: DataView, at: number, family: 4 | 6): string => {
  const key =
    family === 4
      ? view.getUint32(at).toString(36)
      : `${view.getUint32(at)}.${view.getUint32(at + 4)}.${view.getUint32(at + 8)}.${view.getUint32(at + 12)}`
  let text = addressCache.get(key)
  if (text === undefined) {
    text = family === 4 ? formatIpv4(view, at) : formatIpv6(view, at)
    if (addressCache.size >= ADDRESS_CACHE_LIMIT) addressCache.clear()
    addressCache.set(key, text)
  }
  return text
}

const decodeOpen = (
  view: DataView,
  at: number,
  timestampNs: bigint,
  target: number,
  pid: number,
  tid: number,
  fd: number
): CaptureEvent | undefined => {
  const rawFamily = view.getUint8(at + H.family)
  const base = { kind: "open", timestampNs, target, pid, tid, fd } as const
  if (rawFamily === 0)
    return {
      ...base,
      family: 0,
      localAddress: undefined,
      localPort: undefined,
      peerAddress: undefined,
      peerPort: undefined
    }
  if (rawFamily !== 4 && rawFamily !== 6) return undefined
  const local = at + C.local_addr
  const peer = at + C.peer_addr
  // A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: report the IPv4 connection it is.
  const mapped = rawFamily === 6 && isV4Mapped(view, local) && isV4Mapped(view, peer)
  const family = mapped ? 4 : rawFamily
  const shift = mapped ? 12 : 0
  return {
    ...base,
    family,
    localAddress: formatAddress(view, local + shift, family),
    localPort: view.getUint16(at + C.local_port, true),
    peerAddress: formatAddress(view, peer + shift, family),
    peerPort: view.getUint16(at + C.peer_port, true)
  }
}

/** Bytes of the batch at the start of `buffer`, as its header says (within the buffer's length). */
export const batchLength = (buffer: Uint8Array): number =>
  buffer.byteLength < BatchHeader.size
    ? 0
    : Math.min(
        buffer.byteLength,
        new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength).getUint32(
          BatchHeader.fields.batch_bytes,
          true
        )
      )

/**
 * A batch's events, decoded as they are iterated. Never throws: bad records are skipped and reported
 * through `onMalformed` (with how many) as iteration passes them.
 */
export function* eventsOf(batch: Uint8Array, onMalformed: (count: number) => void): Generator<CaptureEvent> {
  if (batch.byteLength < BatchHeader.size) {
    if (batch.byteLength > 0) onMalformed(1)
    return
  }
  const view = new DataView(batch.buffer, batch.byteOffset, batch.byteLength)
  const offsetNs = view.getBigInt64(BatchHeader.fields.clock_offset_ns, true)
  let next = BatchHeader.size
  while (next + RECORD_PREFIX <= batch.byteLength) {
    const length = view.getUint32(next, true)
    const at = next + RECORD_PREFIX
    next = at + length
    if (next > batch.byteLength || length < EventHeader.size) {
      onMalformed(1)
      break
    }
    const timestampNs = view.getBigUint64(at + H.timestamp_ns, true) + offsetNs
    const pid = view.getUint32(at + H.pid, true)
    const tid = view.getUint32(at + H.tid, true)
    const fd = view.getInt32(at + H.fd, true)
    const target = view.getUint32(at + H.target, true)
    switch (view.getUint8(at + H.kind)) {
      case Kind.data: {
        const syscall: Syscall | undefined = syscalls[view.getUint8(at + H.syscall)]
        const payloadLength = length >= DataEvent.size ? view.getUint32(at + D.payload_len, true) : -1
        if (syscall === undefined || DataEvent.size + payloadLength !== length) {
          onMalformed(1)
          continue
        }
        yield {
          kind: "data",
          timestampNs,
          target,
          pid,
          tid,
          fd,
          direction: view.getUint8(at + H.direction) === 2 ? "egress" : "ingress",
          syscall,
          totalLength: view.getUint32(at + D.total_len, true),
          payload: batch.subarray(at + D.payload, next)
        }
        continue
      }
      case Kind.open: {
        const event =
          length === OpenEvent.size ? decodeOpen(view, at, timestampNs, target, pid, tid, fd) : undefined
        if (event === undefined) onMalformed(1)
        else yield event
        continue
      }
      case Kind.close:
        yield { kind: "close", timestampNs, target, pid, tid, fd }
        continue
      case Kind.fork:
        if (length !== ForkEvent.size) {
          onMalformed(1)
          continue
        }
        yield {
          kind: "fork",
          timestampNs,
          target,
          parentPid: pid,
          childPid: view.getUint32(at + ForkEvent.fields.child_pid, true)
        }
        continue
      case Kind.exit:
        yield { kind: "exit", timestampNs, target, pid }
        continue
      case Kind.lost: {
        const lost =
          length === LostEvent.size ? kinds[view.getUint8(at + LostEvent.fields.lost_kind)] : undefined
        if (lost === undefined) {
          onMalformed(1)
          continue
        }
        const data = lost === "data"
        yield {
          kind: "lost",
          timestampNs,
          target,
          pid,
          tid,
          fd,
          lost,
          direction: data ? (view.getUint8(at + H.direction) === 2 ? "egress" : "ingress") : undefined,
          syscall: data ? syscalls[view.getUint8(at + H.syscall)] : undefined,
          totalLength: data ? view.getUint32(at + LostEvent.fields.total_len, true) : 0
        }
        continue
      }
      case Kind.trace: {
        const role = view.getUint8(at + T.role)
        if (length !== TraceEvent.size || (role !== TraceRole.server && role !== TraceRole.client)) {
          onMalformed(1)
          continue
        }
        yield {
          kind: "trace",
          timestampNs,
          target,
          pid,
          tid,
          fd,
          role: role === TraceRole.server ? "server" : "client",
          traceId: ascii(view, at + T.trace_id, 32),
          spanId: ascii(view, at + T.span_id, 16),
          parentSpanId:
            view.getUint8(at + T.has_parent) === 0 ? undefined : ascii(view, at + T.parent_id, 16),
          flags: Number.parseInt(ascii(view, at + T.flags, 2), 16)
        }
        continue
      }
      default:
        onMalformed(1)
    }
  }
  if (next < batch.byteLength) onMalformed(1)
}
