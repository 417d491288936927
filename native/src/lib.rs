//! iii native addon: loads bpf/iii_capture.bpf.o (or, with propagation, iii_capture_propagation.bpf.o) with aya, fills the target maps, attaches the
//! tracepoints and hands JavaScript batches of raw records, written into a fixed set of buffers
//! JavaScript lends it and recycles (layout in bpf/iii_capture.h): no allocation per batch, and
//! memory fixed whatever the load. Decoding happens in packages/agent (EbpfCapture.ts).
//!
//! Error messages start with a code the TypeScript wrapper maps to tagged errors:
//! `permission`, `tracefs`, `btf`, `verifier`, `load`, `attach`, `map`, `io`, `invalid`.
mod capture;
mod clock;
mod diagnostics;
mod layout;
mod ring;

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use napi::bindgen_prelude::{Buffer, Function};
use napi_derive::napi;

use capture::{ReaderStats, Running, Settings, Slab, MAX_RECORD};
use diagnostics::error;

#[napi(object)]
pub struct CaptureOptions {
    /// Process ids (tgids) to trace from the start; their children are traced too.
    pub pids: Option<Vec<u32>>,
    /// cgroup v2 directories whose processes are traced (e.g. /sys/fs/cgroup/kubepods/...).
    pub cgroups: Option<Vec<String>>,
    /// Allow `addCgroup` later even when `cgroups` is empty. Default: whether `cgroups` is non-empty.
    pub enable_cgroups: Option<bool>,
    /// Payload bytes captured per read/write. Default 4096, at most 8192.
    pub payload_bytes: Option<u32>,
    /// Ring buffer size in bytes (a power of two, page multiple). Default 8 MiB.
    pub ring_buffer_bytes: Option<u32>,
    /// The programs wake the reader once this many bytes are pending. Default 256 KiB.
    pub wakeup_bytes: Option<u32>,
    /// The reader drains the ring at least this often. Default 250 ms (sooner once `wakeup_bytes` are pending).
    pub poll_interval_ms: Option<u32>,
    /// BPF object to load instead of the embedded one (with `propagation`, one built with it).
    pub object_path: Option<String>,
    /// Mount tracefs at /sys/kernel/tracing when it is not mounted. Default true.
    pub mount_tracefs: Option<bool>,
    /// A pid namespace file (e.g. /proc/self/ns/pid): pids (given and reported) are numbered in that
    /// namespace, and processes outside it are never traced. Default: the kernel's own pids.
    pub pid_namespace: Option<String>,
    /// With `pidNamespace`: trace every process forked into the namespace from outside it (a
    /// container started into a pod's shared namespace), from birth. Default false.
    pub adopt_namespace_entrants: Option<bool>,
    /// Log lines from writes to fds 1 and 2: `off`; `sockets`, when those are sockets (a command
    /// started with socketpairs for its output), through the socket hooks; `syscalls` (default),
    /// whatever they are, through the write syscalls' tracepoints.
    pub stdio: Option<String>,
    /// Trace processes by pid (`pids`, `addPid`, their children). Default true; off, the programs
    /// check cgroups only (a node agent).
    pub pid_targets: Option<bool>,
    /// Trace propagation: outbound HTTP/1.x requests of the `cgroups` (and of those added with
    /// `propagate`) get a `traceparent` (bpf/iii_propagation.bpf.h); inbound requests of every traced
    /// process get their server ids in the kernel (trace records). Default false.
    pub propagation: Option<bool>,
}

#[napi(object)]
pub struct Counters {
    /// Records the kernel could not write because the ring buffer was full.
    pub dropped: f64,
    /// Of those, the ones no loss notice reports (the loss ring was full too, or the reader held
    /// too many notices): their connections cannot tell what they lost.
    pub unrecorded: f64,
    /// Loss notices handed to JavaScript (each a record the kernel could not write).
    pub losses: f64,
    /// Records and loss notices still in the rings when the capture closed before they could be
    /// handed over.
    pub abandoned: f64,
    /// Batches handed to JavaScript.
    pub batches: f64,
    /// Records handed to JavaScript, loss notices included.
    pub records: f64,
    /// Records skipped because their size did not match their kind (should stay 0).
    pub malformed: f64,
    /// Propagation: outbound requests given a traceparent by the kernel.
    pub injected: f64,
    /// Propagation: outbound requests that carried their own traceparent (left untouched).
    pub carried: f64,
    /// Propagation: connections left alone because their bytes could not be framed as HTTP/1.x.
    pub unframed: f64,
    /// Propagation: requests sent without a traceparent because the socket's send buffer had too
    /// little room to insert one safely.
    pub skipped: f64,
    /// Batches handed to JavaScript and not recycled yet.
    pub in_flight: f64,
}

/// The nsfs device and inode of a namespace file: what bpf_get_ns_current_pid_tgid matches.
fn pid_namespace_id(path: &str) -> napi::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| error("invalid", format!("pid namespace {path}: {e}")))?;
    if meta.ino() == 0 {
        return Err(error("invalid", format!("pid namespace {path}: inode 0")));
    }
    Ok((meta.dev(), meta.ino()))
}

/// Targets are numbered from 1: 0 means "not traced" to the programs.
fn valid_target(target: Option<u32>) -> napi::Result<u32> {
    match target.unwrap_or(layout::DEFAULT_TARGET) {
        0 => Err(error(
            "invalid",
            "target 0 is reserved (not traced); targets start at 1",
        )),
        target => Ok(target),
    }
}

fn cgroup_id(path: &str) -> napi::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(path).map_err(|e| error("invalid", format!("cgroup {path}: {e}")))?;
    if !meta.is_dir() {
        return Err(error(
            "invalid",
            format!("cgroup {path} is not a directory"),
        ));
    }
    // A cgroup v2 directory's inode number is the id bpf_get_current_cgroup_id() returns.
    Ok(meta.ino())
}

/// Raw bytes with an alignment of 8: the ELF parser reads section headers in place and rejects
/// misaligned data, and `include_bytes!` only guarantees an alignment of 1.
#[cfg(iii_embedded_object)]
#[repr(C)]
struct Aligned<Bytes: ?Sized> {
    _align: [u64; 0],
    bytes: Bytes,
}

#[cfg(iii_embedded_object)]
static EMBEDDED_OBJECT: &Aligned<[u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!(env!("III_BPF_OBJECT_PATH")),
};

/// The same programs with trace propagation compiled in: a separate object because its socket map
/// needs CAP_NET_ADMIN, which a capture-only agent should not have to hold.
#[cfg(iii_embedded_object)]
static EMBEDDED_PROPAGATION_OBJECT: &Aligned<[u8]> = &Aligned {
    _align: [],
    bytes: *include_bytes!(env!("III_BPF_PROPAGATION_OBJECT_PATH")),
};

fn embedded_object(propagation: bool) -> Option<&'static [u8]> {
    #[cfg(iii_embedded_object)]
    {
        Some(if propagation {
            &EMBEDDED_PROPAGATION_OBJECT.bytes
        } else {
            &EMBEDDED_OBJECT.bytes
        })
    }
    #[cfg(not(iii_embedded_object))]
    {
        let _ = propagation;
        None
    }
}

#[napi]
pub struct Capture {
    // Declared first so it is dropped first: the reader thread writes into `buffers`.
    running: Option<Running>,
    /// The batch buffers JavaScript lent (kept referenced so they outlive the reader).
    _buffers: Vec<Buffer>,
}

#[napi]
impl Capture {
    /// Loads and attaches the programs and starts the reader thread, which fills the `buffers`
    /// JavaScript lends it (each at least 64 KiB) with batches. `onBatch` receives the index of the
    /// buffer holding a new batch; that buffer is JavaScript's until it calls `recycle(index)`.
    /// Index 0xFFFFFFFF means the capture ended (after `close`).
    #[napi(factory)]
    pub fn start(
        options: CaptureOptions,
        mut buffers: Vec<Buffer>,
        on_batch: Function<u32, ()>,
    ) -> napi::Result<Capture> {
        if buffers.is_empty() || buffers.len() >= capture::END as usize {
            return Err(error("invalid", "pass at least one batch buffer"));
        }
        let smallest = 2 * MAX_RECORD;
        let slabs = buffers
            .iter_mut()
            .map(|buffer| {
                if buffer.len() < smallest {
                    return Err(error(
                        "invalid",
                        format!(
                            "batch buffers must hold at least {smallest} bytes, got {}",
                            buffer.len()
                        ),
                    ));
                }
                let bytes: &mut [u8] = buffer.as_mut();
                Ok(Slab {
                    address: bytes.as_mut_ptr() as usize,
                    len: bytes.len(),
                })
            })
            .collect::<napi::Result<Vec<_>>>()?;
        let object = match (&options.object_path, embedded_object(options.propagation.unwrap_or(false))) {
            (Some(path), _) => Cow::Owned(
                std::fs::read(path).map_err(|e| error("load", format!("reading BPF object {path}: {e}")))?,
            ),
            (None, Some(bytes)) => Cow::Borrowed(bytes),
            (None, None) => {
                return Err(error("load", "this addon was built without a BPF object: pass objectPath or rebuild with scripts/build-native.sh"))
            }
        };
        let cgroup_paths = options.cgroups.unwrap_or_default();
        let cgroups = cgroup_paths
            .iter()
            .map(|path| cgroup_id(path).map(|id| (path.clone(), id)))
            .collect::<napi::Result<Vec<_>>>()?;
        let ring_buffer_bytes = options.ring_buffer_bytes.unwrap_or(8 << 20);
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < 4096 {
            return Err(error(
                "invalid",
                format!("ringBufferBytes must be a power of two >= 4096, got {ring_buffer_bytes}"),
            ));
        }
        let settings = Settings {
            object,
            payload_bytes: options.payload_bytes.unwrap_or(layout::DEFAULT_PAYLOAD),
            ring_buffer_bytes,
            // A threshold the ring cannot reach would leave the reader to its timer alone.
            wakeup_bytes: options
                .wakeup_bytes
                .unwrap_or(256 * 1024)
                .min(ring_buffer_bytes / 2),
            poll_interval: Duration::from_millis(
                options.poll_interval_ms.unwrap_or(250).max(1).into(),
            ),
            cgroups_enabled: options.enable_cgroups.unwrap_or(!cgroups.is_empty()),
            mount_tracefs: options.mount_tracefs.unwrap_or(true),
            pid_namespace: options
                .pid_namespace
                .as_deref()
                .map(pid_namespace_id)
                .transpose()?,
            adopt_entrants: options.adopt_namespace_entrants.unwrap_or(false),
            stdio_capture: match options.stdio.as_deref().unwrap_or("syscalls") {
                "off" => 0,
                "sockets" => 1,
                "syscalls" => 2,
                other => {
                    return Err(error(
                        "invalid",
                        format!("stdio must be off, sockets or syscalls, got {other}"),
                    ))
                }
            },
            pid_targets: options.pid_targets.unwrap_or(true),
            propagation: options.propagation.unwrap_or(false),
        };
        let stats = Arc::new(ReaderStats::default());
        let on_batch = on_batch
            .build_threadsafe_function::<u32>()
            .callee_handled::<false>()
            .build_callback(|ctx| Ok(ctx.value))?;
        let running = Running::start(
            settings,
            slabs,
            &options.pids.unwrap_or_default(),
            &cgroups,
            on_batch,
            stats,
        )?;
        Ok(Capture {
            running: Some(running),
            _buffers: buffers,
        })
    }

    fn running(&mut self) -> napi::Result<&mut Running> {
        self.running
            .as_mut()
            .filter(|running| !running.closed)
            .ok_or_else(|| error("closed", "the capture is closed"))
    }

    /// Traces this process (and, from now on, its children) as `target` (default 1): the number
    /// every record of theirs carries.
    #[napi]
    pub fn add_pid(&mut self, pid: u32, target: Option<u32>) -> napi::Result<()> {
        let target = valid_target(target)?;
        self.running()?.add_pid(pid, target)
    }

    /// Stops capturing (detaches the programs) and hands over everything still in the rings, as
    /// batches like any other, then the end-of-capture index. `close` afterwards.
    #[napi]
    pub fn drain(&mut self) -> napi::Result<()> {
        self.running()?.drain();
        Ok(())
    }

    /// Hands buffer `index` back to the reader: JavaScript is done with the batch in it.
    #[napi]
    pub fn recycle(&mut self, index: u32) -> napi::Result<()> {
        match &self.running {
            Some(running) if !running.closed => running.recycle(index),
            // Closed: the reader is gone, nothing to fill.
            _ => Ok(()),
        }
    }

    /// Stops tracing this process (children already traced stay traced).
    #[napi]
    pub fn remove_pid(&mut self, pid: u32) -> napi::Result<()> {
        self.running()?.remove_pid(pid)
    }

    /// Traces every process in this cgroup v2 directory (not its subdirectories) as `target`
    /// (default 1). `propagate` (needs `propagation` at start): its outbound HTTP/1.x requests get a
    /// traceparent (its subdirectories' too). Returns the cgroup's id.
    #[napi]
    pub fn add_cgroup(
        &mut self,
        path: String,
        target: Option<u32>,
        propagate: Option<bool>,
    ) -> napi::Result<f64> {
        let target = valid_target(target)?;
        let id = cgroup_id(&path)?;
        let running = self.running()?;
        if !running.cgroups_enabled {
            return Err(error("invalid", "cgroup targets are disabled: start the capture with cgroups or enableCgroups: true"));
        }
        let propagate = propagate.unwrap_or(false).then_some(path.as_str());
        running.add_cgroup(id, target, propagate)?;
        Ok(id as f64)
    }

    /// Stops tracing the cgroup with this id (as `addCgroup` returned it; the directory may be gone).
    #[napi]
    pub fn remove_cgroup(&mut self, id: f64) -> napi::Result<()> {
        self.running()?.remove_cgroup(id as u64)
    }

    /// Readable after `close` too: the final figures.
    #[napi]
    pub fn counters(&mut self) -> napi::Result<Counters> {
        let running = self
            .running
            .as_ref()
            .ok_or_else(|| error("closed", "the capture is closed"))?;
        let stats = &running.stats;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed) as f64;
        Ok(Counters {
            dropped: running.kernel_counter(layout::COUNTER_DROPPED)? as f64,
            unrecorded: (running.kernel_counter(layout::COUNTER_UNRECORDED)? as f64)
                + load(&stats.notices_overflowed),
            losses: load(&stats.losses),
            abandoned: load(&stats.abandoned),
            batches: stats.batches.load(Ordering::Relaxed) as f64,
            records: stats.records.load(Ordering::Relaxed) as f64,
            malformed: stats.malformed.load(Ordering::Relaxed) as f64,
            injected: running.kernel_counter(layout::COUNTER_INJECTED)? as f64,
            carried: running.kernel_counter(layout::COUNTER_CARRIED)? as f64,
            unframed: running.kernel_counter(layout::COUNTER_UNFRAMED)? as f64,
            skipped: running.kernel_counter(layout::COUNTER_SKIPPED)? as f64,
            in_flight: running.in_flight() as f64,
        })
    }

    /// Detaches the programs, delivers what fits in the free buffers (the rest is counted as
    /// abandoned), then the end-of-capture index. Idempotent; `counters` still answers. (If the
    /// process exits instead, the kernel detaches with the fds.)
    #[napi]
    pub fn close(&mut self) {
        if let Some(running) = self.running.as_mut() {
            running.close();
        }
    }
}

#[napi(object)]
pub struct FieldOffset {
    pub name: String,
    pub offset: u32,
}

#[napi(object)]
pub struct StructLayout {
    pub name: String,
    pub size: u32,
    pub fields: Vec<FieldOffset>,
}

/// Sizes and field offsets of the Rust mirror of bpf/iii_capture.h (for the layout test).
#[napi]
pub fn event_layout() -> Vec<StructLayout> {
    layout::describe()
        .into_iter()
        .map(|(name, size, fields)| StructLayout {
            name: name.into(),
            size: size as u32,
            fields: fields
                .into_iter()
                .map(|(name, offset)| FieldOffset {
                    name: name.into(),
                    offset: offset as u32,
                })
                .collect(),
        })
        .collect()
}

#[napi]
pub fn layout_version() -> u32 {
    layout::LAYOUT_VERSION
}

#[napi(object)]
pub struct Diagnostics {
    /// Capabilities this process lacks (empty when it has CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON,
    /// + CAP_NET_ADMIN for propagation).
    pub missing_capabilities: Vec<String>,
    pub tracefs_mounted: bool,
    pub btf: bool,
    pub embedded_object: bool,
}

/// What this process can do; `propagation`: counting what trace propagation needs besides.
#[napi]
pub fn diagnose(propagation: Option<bool>) -> Diagnostics {
    Diagnostics {
        missing_capabilities: diagnostics::missing_capabilities(propagation.unwrap_or(false))
            .into_iter()
            .map(String::from)
            .collect(),
        tracefs_mounted: diagnostics::tracefs_mounted(),
        btf: diagnostics::btf_available(),
        embedded_object: embedded_object(false).is_some(),
    }
}
