/**
 * The batch decoder on hand-built batches (the layout itself is checked in EventLayout.test.ts):
 * every event kind, address formatting, and malformed input that must be counted, not thrown.
 */
import { describe, expect, it } from "vitest"
import type { CaptureEvent } from "../src/CaptureEvent.js"
import { eventsOf } from "../src/internal/EventDecoder.js"
import {
  BatchHeader,
  DataEvent,
  EventHeader,
  ForkEvent,
  Kind,
  LostEvent,
  OpenEvent,
  TraceEvent,
  TraceRole
} from "../src/internal/EventLayout.js"

interface Header {
  timestampNs: bigint
  pid: number
  tid: number
  fd: number
  kind: number
  syscall?: number
  direction?: number
  family?: number
  target?: number
}

const header = (size: number, h: Header): Buffer => {
  const record = Buffer.alloc(size)
  record.writeBigUInt64LE(h.timestampNs, EventHeader.fields.timestamp_ns)
  record.writeUInt32LE(h.pid, EventHeader.fields.pid)
  record.writeUInt32LE(h.tid, EventHeader.fields.tid)
  record.writeInt32LE(h.fd, EventHeader.fields.fd)
  record.writeUInt8(h.kind, EventHeader.fields.kind)
  record.writeUInt8(h.syscall ?? 0, EventHeader.fields.syscall)
  record.writeUInt8(h.direction ?? 0, EventHeader.fields.direction)
  record.writeUInt8(h.family ?? 0, EventHeader.fields.family)
  record.writeUInt32LE(h.target ?? 0, EventHeader.fields.target)
  return record
}

const dataRecord = (h: Header, totalLength: number, payload: string): Buffer => {
  const bytes = Buffer.from(payload, "latin1")
  const record = header(DataEvent.size + bytes.length, h)
  record.writeBigInt64LE(BigInt(totalLength), DataEvent.fields.ret)
  record.writeUInt32LE(totalLength, DataEvent.fields.total_len)
  record.writeUInt32LE(bytes.length, DataEvent.fields.payload_len)
  bytes.copy(record, DataEvent.fields.payload)
  return record
}

const openRecord = (h: Header, local: [Array<number>, number], peer: [Array<number>, number]): Buffer => {
  const record = header(OpenEvent.size, h)
  record.writeUInt16LE(local[1], OpenEvent.fields.local_port)
  record.writeUInt16LE(peer[1], OpenEvent.fields.peer_port)
  Buffer.from(local[0]).copy(record, OpenEvent.fields.local_addr)
  Buffer.from(peer[0]).copy(record, OpenEvent.fields.peer_addr)
  return record
}

const batch = (
  offsetNs: bigint,
  records: ReadonlyArray<Buffer>,
  trailing: Buffer = Buffer.alloc(0)
): Buffer => {
  const head = Buffer.alloc(BatchHeader.size)
  head.writeBigInt64LE(offsetNs, BatchHeader.fields.clock_offset_ns)
  head.writeUInt32LE(records.length, BatchHeader.fields.record_count)
  const framed = records.flatMap((record) => {
    const length = Buffer.alloc(4)
    length.writeUInt32LE(record.length)
    return [length, record]
  })
  return Buffer.concat([head, ...framed, trailing])
}

const ipv6 = (text: string): Array<number> => {
  // Expand via the URL parser's canonical form, then to 16 bytes.
  const [left = "", right = ""] = text.split("::")
  const groups = (part: string) => (part === "" ? [] : part.split(":"))
  const head = groups(left)
  const tail = groups(right)
  const all = text.includes("::")
    ? [...head, ...Array(8 - head.length - tail.length).fill("0"), ...tail]
    : head
  return all.flatMap((group) => {
    const value = Number.parseInt(group, 16)
    return [value >> 8, value & 0xff]
  })
}

const base = { timestampNs: 1_000n, pid: 42, tid: 43, fd: 7, target: 5 }

/** A whole batch decoded at once, with how many records were skipped as malformed. */
const decodeBatch = (batch: Uint8Array): { events: Array<CaptureEvent>; malformed: number } => {
  let malformed = 0
  const events = [
    ...eventsOf(batch, (count) => {
      malformed += count
    })
  ]
  return { events, malformed }
}

describe("eventsOf", () => {
  it("decodes data events with unix timestamps, syscall names, directions and payload views", () => {
    const buffer = batch(1_700_000_000_000_000_000n, [
      dataRecord({ ...base, kind: Kind.data, syscall: 1, direction: 1 }, 18, "GET / HTTP/1.1\r\n\r\n"),
      dataRecord({ ...base, kind: Kind.data, syscall: 4, direction: 2, fd: 1 }, 10_000, "abc")
    ])
    const { events, malformed } = decodeBatch(buffer)
    expect(malformed).toBe(0)
    expect(events).toHaveLength(2)
    expect(events[0]).toMatchObject({
      kind: "data",
      timestampNs: 1_700_000_000_000_001_000n,
      target: 5,
      pid: 42,
      tid: 43,
      fd: 7,
      direction: "ingress",
      syscall: "read",
      totalLength: 18
    })
    const second = events[1]
    expect(second).toMatchObject({ direction: "egress", syscall: "writev", totalLength: 10_000, fd: 1 })
    if (second?.kind !== "data") throw new Error("expected data")
    expect(Buffer.from(second.payload).toString()).toBe("abc")
    // A view, not a copy.
    expect(second.payload.buffer).toBe(buffer.buffer)
  })

  it("formats IPv4, IPv6 (RFC 5952) and reports IPv4-mapped IPv6 as the IPv4 connection it is", () => {
    const cases = [
      "::1",
      "::",
      "fe80::1",
      "2001:db8::1:0:0:1",
      "1:0:0:2:0:0:0:3",
      "2001:db8:0:1:1:1:1:1",
      "1::"
    ]
    for (const address of cases) {
      const { events } = decodeBatch(
        batch(0n, [
          openRecord({ ...base, kind: Kind.open, family: 6 }, [ipv6(address), 8080], [ipv6("::1"), 5])
        ])
      )
      // The URL parser serializes IPv6 hosts canonically: the oracle.
      const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1)
      expect(events[0]).toMatchObject({ kind: "open", family: 6, localAddress: canonical, localPort: 8080 })
    }
    const { events } = decodeBatch(
      batch(0n, [
        openRecord(
          { ...base, kind: Kind.open, family: 4 },
          [[10, 0, 0, 1], 40000],
          [[93, 184, 216, 34], 443]
        ),
        openRecord(
          { ...base, kind: Kind.open, family: 6 },
          [[...Array(10).fill(0), 0xff, 0xff, 127, 0, 0, 1], 3000],
          [[...Array(10).fill(0), 0xff, 0xff, 192, 168, 1, 20], 51234]
        )
      ])
    )
    expect(events).toEqual([
      {
        kind: "open",
        timestampNs: 1_000n,
        target: 5,
        pid: 42,
        tid: 43,
        fd: 7,
        family: 4,
        localAddress: "10.0.0.1",
        localPort: 40000,
        peerAddress: "93.184.216.34",
        peerPort: 443
      },
      {
        kind: "open",
        timestampNs: 1_000n,
        target: 5,
        pid: 42,
        tid: 43,
        fd: 7,
        family: 4,
        localAddress: "127.0.0.1",
        localPort: 3000,
        peerAddress: "192.168.1.20",
        peerPort: 51234
      }
    ])
  })

  it("decodes close, fork and exit", () => {
    const fork = header(ForkEvent.size, { ...base, fd: -1, kind: Kind.fork })
    fork.writeUInt32LE(99, ForkEvent.fields.child_pid)
    const { events } = decodeBatch(
      batch(5n, [
        header(EventHeader.size, { ...base, kind: Kind.close }),
        fork,
        header(EventHeader.size, { ...base, fd: -1, kind: Kind.exit })
      ])
    )
    expect(events).toEqual([
      { kind: "close", timestampNs: 1_005n, target: 5, pid: 42, tid: 43, fd: 7 },
      { kind: "fork", timestampNs: 1_005n, target: 5, parentPid: 42, childPid: 99 },
      { kind: "exit", timestampNs: 1_005n, target: 5, pid: 42 }
    ])
  })

  it("decodes trace records (propagation): role, ids as text, no parent for a root; a bad role is malformed", () => {
    const trace = (role: number, parent: string | undefined) => {
      const record = header(TraceEvent.size, { ...base, kind: Kind.trace })
      record.writeUInt8(role, TraceEvent.fields.role)
      record.writeUInt8(parent === undefined ? 0 : 1, TraceEvent.fields.has_parent)
      record.write("4bf92f3577b34da6a3ce929d0e0e4736", TraceEvent.fields.trace_id, "latin1")
      record.write("00f067aa0ba902b7", TraceEvent.fields.span_id, "latin1")
      record.write(parent ?? "0000000000000000", TraceEvent.fields.parent_id, "latin1")
      record.write("01", TraceEvent.fields.flags, "latin1")
      return record
    }
    const { events, malformed } = decodeBatch(
      batch(5n, [
        trace(TraceRole.server, undefined),
        trace(TraceRole.client, "b7ad6b7169203331"),
        trace(9, undefined)
      ])
    )
    const ids = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", flags: 1 }
    expect(events).toEqual([
      {
        kind: "trace",
        timestampNs: 1_005n,
        target: 5,
        pid: 42,
        tid: 43,
        fd: 7,
        role: "server",
        ...ids,
        parentSpanId: undefined
      },
      {
        kind: "trace",
        timestampNs: 1_005n,
        target: 5,
        pid: 42,
        tid: 43,
        fd: 7,
        role: "client",
        ...ids,
        parentSpanId: "b7ad6b7169203331"
      }
    ])
    expect(malformed).toBe(1)
  })

  it("decodes loss notices: what was lost, where, and how many bytes the lost syscall moved", () => {
    const lost = (h: Omit<Header, "kind">, lostKind: number, totalLength: number) => {
      const record = header(LostEvent.size, { ...h, kind: Kind.lost })
      record.writeUInt32LE(totalLength, LostEvent.fields.total_len)
      record.writeUInt8(lostKind, LostEvent.fields.lost_kind)
      return record
    }
    const write = lost({ ...base, syscall: 4, direction: 2 }, Kind.data, 5000)
    const close = lost({ ...base, syscall: 12 }, Kind.close, 0)
    const unknown = lost(base, 42, 0)
    const result = decodeBatch(batch(0n, [write, close, unknown]))
    expect(result.events).toEqual([
      {
        kind: "lost",
        timestampNs: base.timestampNs,
        target: base.target,
        pid: base.pid,
        tid: base.tid,
        fd: base.fd,
        lost: "data",
        direction: "egress",
        syscall: "writev",
        totalLength: 5000
      },
      {
        kind: "lost",
        timestampNs: base.timestampNs,
        target: base.target,
        pid: base.pid,
        tid: base.tid,
        fd: base.fd,
        lost: "close",
        direction: undefined,
        syscall: undefined,
        totalLength: 0
      }
    ])
    expect(result.malformed).toBe(1)
  })

  it("counts malformed records and keeps decoding the well-framed ones", () => {
    const good = header(EventHeader.size, { ...base, kind: Kind.close })
    const unknownKind = header(EventHeader.size, { ...base, kind: 77 })
    const unknownSyscall = dataRecord({ ...base, kind: Kind.data, syscall: 200, direction: 1 }, 3, "abc")
    const lyingLength = dataRecord({ ...base, kind: Kind.data, syscall: 1, direction: 1 }, 3, "abc")
    lyingLength.writeUInt32LE(50, DataEvent.fields.payload_len)
    const badFamily = openRecord(
      { ...base, kind: Kind.open, family: 9 },
      [[1, 2, 3, 4], 1],
      [[1, 2, 3, 4], 2]
    )
    const result = decodeBatch(batch(0n, [unknownKind, good, unknownSyscall, lyingLength, badFamily, good]))
    expect(result.events.map((event) => event.kind)).toEqual(["close", "close"])
    expect(result.malformed).toBe(4)
  })

  it("stops at a record cut short and never throws on garbage", () => {
    const cut = batch(
      0n,
      [header(EventHeader.size, { ...base, kind: Kind.close })],
      Buffer.from([200, 0, 0, 0, 1, 2, 3])
    )
    expect(decodeBatch(cut)).toMatchObject({ malformed: 1 })
    expect(decodeBatch(cut).events).toHaveLength(1)
    expect(decodeBatch(new Uint8Array(0))).toEqual({ events: [], malformed: 0 })
    expect(decodeBatch(new Uint8Array(5))).toEqual({ events: [], malformed: 1 })
    for (let seed = 1; seed <= 200; seed++) {
      const noise = Buffer.alloc(64 + seed)
      for (let i = 0; i < noise.length; i++) noise[i] = (seed * 31 + i * 17) & 0xff
      expect(() => decodeBatch(noise)).not.toThrow()
    }
  })
})
