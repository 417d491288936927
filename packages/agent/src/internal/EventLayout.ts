/**
 * TypeScript view of bpf/iii_capture.h (the one source of truth). test/EventLayout.test.ts checks
 * these numbers against the C header (compiled with gcc) and the Rust mirror (native/src/layout.rs).
 */

export const LAYOUT_VERSION = 5

/** { field: offset } plus the struct's size, in the C header's names. */
export interface StructLayout {
  readonly size: number
  readonly fields: Readonly<Record<string, number>>
}

export const BatchHeader = {
  size: 16,
  fields: { clock_offset_ns: 0, record_count: 8, batch_bytes: 12 }
} as const satisfies StructLayout

export const EventHeader = {
  size: 32,
  fields: {
    timestamp_ns: 0,
    pid: 8,
    tid: 12,
    fd: 16,
    kind: 20,
    syscall: 21,
    direction: 22,
    family: 23,
    target: 24,
    reserved: 28
  }
} as const satisfies StructLayout

export const DataEvent = {
  size: 48,
  fields: { ret: 32, total_len: 40, payload_len: 44, payload: 48 }
} as const satisfies StructLayout

export const OpenEvent = {
  size: 72,
  fields: { local_port: 32, peer_port: 34, reserved: 36, local_addr: 40, peer_addr: 56 }
} as const satisfies StructLayout

export const CloseEvent = { size: 32, fields: {} } as const satisfies StructLayout

export const ForkEvent = { size: 40, fields: { child_pid: 32, reserved: 36 } } as const satisfies StructLayout

export const ExitEvent = { size: 32, fields: {} } as const satisfies StructLayout

export const LostEvent = {
  size: 40,
  fields: { total_len: 32, lost_kind: 36, reserved: 37 }
} as const satisfies StructLayout

export const TraceEvent = {
  size: 112,
  fields: {
    role: 32,
    has_parent: 33,
    reserved: 34,
    trace_id: 40,
    span_id: 72,
    parent_id: 88,
    flags: 104,
    reserved2: 106
  }
} as const satisfies StructLayout

/** Every struct by its C name (what the layout test walks). */
export const structs: Readonly<Record<string, StructLayout>> = {
  iii_batch_header: BatchHeader,
  iii_event_header: EventHeader,
  iii_data_event: DataEvent,
  iii_open_event: OpenEvent,
  iii_close_event: CloseEvent,
  iii_fork_event: ForkEvent,
  iii_exit_event: ExitEvent,
  iii_lost_event: LostEvent,
  iii_trace_event: TraceEvent
}

/** Each record in a batch is preceded by its length (u32, little-endian). */
export const RECORD_PREFIX = 4

/** enum iii_event_kind */
export const Kind = { data: 1, open: 2, close: 3, fork: 4, exit: 5, lost: 6, trace: 7 } as const

/** enum iii_event_kind, indexed by value (what a loss notice's `lost_kind` names). */
export const kinds = [undefined, "data", "open", "close", "fork", "exit", undefined, "trace"] as const

/** enum iii_trace_role */
export const TraceRole = { server: 1, client: 2 } as const

/** enum iii_syscall, indexed by value. */
export const syscalls = [
  undefined,
  "read",
  "write",
  "readv",
  "writev",
  "recvfrom",
  "sendto",
  "recvmsg",
  "sendmsg",
  "sendfile",
  "other"
] as const

/** enum iii_direction */
export const Direction = { ingress: 1, egress: 2 } as const

/** #define III_DEFAULT_TARGET: the target of pids and cgroups given without one. */
export const DEFAULT_TARGET = 1

/** #define III_MAX_PAYLOAD / III_DEFAULT_PAYLOAD */
export const MAX_PAYLOAD = 8192
export const DEFAULT_PAYLOAD = 4096
