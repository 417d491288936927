//! Rust view of bpf/iii_capture.h. The addon only needs sizes (to validate records before handing
//! them to JavaScript) but mirrors every field so `eventLayout()` can prove the views agree
//! (packages/agent/test/EventLayout.test.ts compares it with the C header and the TS decoder).
use std::mem::{offset_of, size_of};

#[repr(C)]
pub struct BatchHeader {
    pub clock_offset_ns: i64,
    pub record_count: u32,
    pub batch_bytes: u32,
}

#[repr(C)]
pub struct EventHeader {
    pub timestamp_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub fd: i32,
    pub kind: u8,
    pub syscall: u8,
    pub direction: u8,
    pub family: u8,
    pub target: u32,
    pub reserved: u32,
}

#[repr(C)]
pub struct DataEvent {
    pub header: EventHeader,
    pub ret: i64,
    pub total_len: u32,
    pub payload_len: u32,
    // payload: [u8] follows
}

#[repr(C)]
pub struct OpenEvent {
    pub header: EventHeader,
    pub local_port: u16,
    pub peer_port: u16,
    pub reserved: u32,
    pub local_addr: [u8; 16],
    pub peer_addr: [u8; 16],
}

#[repr(C)]
pub struct CloseEvent {
    pub header: EventHeader,
}

#[repr(C)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub reserved: u32,
}

#[repr(C)]
pub struct ExitEvent {
    pub header: EventHeader,
}

#[repr(C)]
pub struct LostEvent {
    pub header: EventHeader,
    pub total_len: u32,
    pub lost_kind: u8,
    pub reserved: [u8; 3],
}

#[repr(C)]
pub struct TraceEvent {
    pub header: EventHeader,
    pub role: u8,
    pub has_parent: u8,
    pub reserved: [u8; 6],
    pub trace_id: [u8; 32],
    pub span_id: [u8; 16],
    pub parent_id: [u8; 16],
    pub flags: [u8; 2],
    pub reserved2: [u8; 6],
}

pub const LAYOUT_VERSION: u32 = 5;
/// The target of pids and cgroups given without one (III_DEFAULT_TARGET).
pub const DEFAULT_TARGET: u32 = 1;
pub const MAX_PAYLOAD: u32 = 8192;
pub const DEFAULT_PAYLOAD: u32 = 4096;

pub const EVENT_DATA: u8 = 1;
pub const EVENT_OPEN: u8 = 2;
pub const EVENT_CLOSE: u8 = 3;
pub const EVENT_FORK: u8 = 4;
pub const EVENT_EXIT: u8 = 5;
pub const EVENT_LOST: u8 = 6;
pub const EVENT_TRACE: u8 = 7;

pub const COUNTER_DROPPED: u32 = 0;
pub const COUNTER_UNRECORDED: u32 = 1;
pub const COUNTER_INJECTED: u32 = 2;
pub const COUNTER_CARRIED: u32 = 3;
pub const COUNTER_UNFRAMED: u32 = 4;
pub const COUNTER_SKIPPED: u32 = 5;

/// A record's (pid, fd), as one key: what ties a loss notice to the connection it belongs to.
pub fn connection_key(record: &[u8]) -> u64 {
    let pid = offset_of!(EventHeader, pid);
    let fd = offset_of!(EventHeader, fd);
    let word = |at: usize| {
        u32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]])
    };
    (u64::from(word(pid)) << 32) | u64::from(word(fd))
}

/// A record's timestamp (the kernel's monotonic clock).
pub fn timestamp(record: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&record[..8]);
    u64::from_le_bytes(bytes)
}

/// Whether `record` is a complete record of a known kind (sizes as the header defines them).
pub fn is_valid_record(record: &[u8]) -> bool {
    if record.len() < size_of::<EventHeader>() {
        return false;
    }
    let kind = record[offset_of!(EventHeader, kind)];
    let expected = match kind {
        EVENT_DATA => {
            if record.len() < size_of::<DataEvent>() {
                return false;
            }
            let at = offset_of!(DataEvent, payload_len);
            let payload_len =
                u32::from_le_bytes([record[at], record[at + 1], record[at + 2], record[at + 3]]);
            size_of::<DataEvent>() + payload_len as usize
        }
        EVENT_OPEN => size_of::<OpenEvent>(),
        EVENT_CLOSE => size_of::<CloseEvent>(),
        EVENT_FORK => size_of::<ForkEvent>(),
        EVENT_EXIT => size_of::<ExitEvent>(),
        EVENT_LOST => size_of::<LostEvent>(),
        EVENT_TRACE => size_of::<TraceEvent>(),
        _ => return false,
    };
    record.len() == expected
}

/// One struct's name (as in the C header), size and `(field, offset)` pairs.
pub type StructDescription = (&'static str, usize, Vec<(&'static str, usize)>);

/// Every struct of the layout, in the C header's names.
pub fn describe() -> Vec<StructDescription> {
    vec![
        (
            "iii_batch_header",
            size_of::<BatchHeader>(),
            vec![
                ("clock_offset_ns", offset_of!(BatchHeader, clock_offset_ns)),
                ("record_count", offset_of!(BatchHeader, record_count)),
                ("batch_bytes", offset_of!(BatchHeader, batch_bytes)),
            ],
        ),
        (
            "iii_event_header",
            size_of::<EventHeader>(),
            vec![
                ("timestamp_ns", offset_of!(EventHeader, timestamp_ns)),
                ("pid", offset_of!(EventHeader, pid)),
                ("tid", offset_of!(EventHeader, tid)),
                ("fd", offset_of!(EventHeader, fd)),
                ("kind", offset_of!(EventHeader, kind)),
                ("syscall", offset_of!(EventHeader, syscall)),
                ("direction", offset_of!(EventHeader, direction)),
                ("family", offset_of!(EventHeader, family)),
                ("target", offset_of!(EventHeader, target)),
                ("reserved", offset_of!(EventHeader, reserved)),
            ],
        ),
        (
            "iii_data_event",
            size_of::<DataEvent>(),
            vec![
                ("ret", offset_of!(DataEvent, ret)),
                ("total_len", offset_of!(DataEvent, total_len)),
                ("payload_len", offset_of!(DataEvent, payload_len)),
                ("payload", size_of::<DataEvent>()),
            ],
        ),
        (
            "iii_open_event",
            size_of::<OpenEvent>(),
            vec![
                ("local_port", offset_of!(OpenEvent, local_port)),
                ("peer_port", offset_of!(OpenEvent, peer_port)),
                ("reserved", offset_of!(OpenEvent, reserved)),
                ("local_addr", offset_of!(OpenEvent, local_addr)),
                ("peer_addr", offset_of!(OpenEvent, peer_addr)),
            ],
        ),
        ("iii_close_event", size_of::<CloseEvent>(), vec![]),
        (
            "iii_fork_event",
            size_of::<ForkEvent>(),
            vec![
                ("child_pid", offset_of!(ForkEvent, child_pid)),
                ("reserved", offset_of!(ForkEvent, reserved)),
            ],
        ),
        ("iii_exit_event", size_of::<ExitEvent>(), vec![]),
        (
            "iii_lost_event",
            size_of::<LostEvent>(),
            vec![
                ("total_len", offset_of!(LostEvent, total_len)),
                ("lost_kind", offset_of!(LostEvent, lost_kind)),
                ("reserved", offset_of!(LostEvent, reserved)),
            ],
        ),
        (
            "iii_trace_event",
            size_of::<TraceEvent>(),
            vec![
                ("role", offset_of!(TraceEvent, role)),
                ("has_parent", offset_of!(TraceEvent, has_parent)),
                ("reserved", offset_of!(TraceEvent, reserved)),
                ("trace_id", offset_of!(TraceEvent, trace_id)),
                ("span_id", offset_of!(TraceEvent, span_id)),
                ("parent_id", offset_of!(TraceEvent, parent_id)),
                ("flags", offset_of!(TraceEvent, flags)),
                ("reserved2", offset_of!(TraceEvent, reserved2)),
            ],
        ),
    ]
}
