//! Loading, attaching and reading: one `Running` per started capture.
use std::borrow::Cow;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::maps::{HashMap, MapData, PerCpuArray, SockHash};
use aya::programs::sock_ops::SockOpsLinkId;
use aya::programs::{
    BtfTracePoint, CgroupAttachMode, ProgramError, RawTracePoint, SkMsg, SockOps, TracePoint,
};
use aya::{Btf, Ebpf, EbpfError, EbpfLoader, VerifierLogLevel};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::Status;

use crate::clock;
use crate::diagnostics::{self, error};
use crate::layout;
use crate::ring::Ring;

/// Called on the JS thread with the index of the buffer now holding a batch (`END`: the capture ended).
pub type BatchCallback = ThreadsafeFunction<u32, (), u32, Status, false>;

/// The index the batch callback receives once the capture has ended.
pub const END: u32 = u32::MAX;

/// Sent on the recycling channel to interrupt a reader waiting for a buffer (not a buffer index).
const WAKE: u32 = u32::MAX - 1;

/// A batch buffer JavaScript lent the reader: its address and length (plain numbers, so the
/// reader thread can hold them; `Capture` keeps the buffers themselves alive).
#[derive(Clone, Copy)]
pub struct Slab {
    pub address: usize,
    pub len: usize,
}

/// Room a batch keeps at its end for one more record: the largest record and its length prefix.
pub const MAX_RECORD: usize =
    std::mem::size_of::<layout::DataEvent>() + layout::MAX_PAYLOAD as usize + 4;

pub struct Settings {
    pub object: Cow<'static, [u8]>,
    pub payload_bytes: u32,
    pub ring_buffer_bytes: u32,
    pub wakeup_bytes: u32,
    pub poll_interval: Duration,
    pub cgroups_enabled: bool,
    pub mount_tracefs: bool,
    /// (nsfs device, inode) of the pid namespace whose numbering the programs use; None: the kernel's.
    pub pid_namespace: Option<(u64, u64)>,
    /// With a pid namespace: trace processes forked into it from outside.
    pub adopt_entrants: bool,
    /// Log lines from writes to fds 1 and 2: 0 none, 1 when they are sockets (the socket hooks),
    /// 2 any (attaches the write syscall tracepoints).
    pub stdio_capture: u8,
    /// Trace processes by pid (iii_tgids); off, only cgroups are checked.
    pub pid_targets: bool,
    /// Trace propagation: `object` is the one built with it (bpf/iii_propagation.bpf.h), whose
    /// sk_msg and sock_ops programs are loaded; the cgroups given at start propagate.
    pub propagation: bool,
}

/// The propagation programs' names in the object.
const SOCKOPS: &str = "iii_sockops";
const SK_MSG: &str = "iii_http_inject";

#[derive(Default)]
pub struct ReaderStats {
    pub batches: AtomicU64,
    /// Records handed over, loss notices included.
    pub records: AtomicU64,
    /// Loss notices handed over (records the kernel could not write, each naming its connection).
    pub losses: AtomicU64,
    /// Loss notices the reader could not keep (more were waiting than `MAX_PENDING_NOTICES`).
    pub notices_overflowed: AtomicU64,
    pub malformed: AtomicU64,
    /// Records (and loss notices) left at close because they could not be handed over in time.
    pub abandoned: AtomicU64,
}

/// Loss notices the reader holds for records it has not read yet; beyond it they are counted only.
const MAX_PENDING_NOTICES: usize = 16_384;

pub struct Running {
    ebpf: Option<Ebpf>,
    /// `close` ran: the maps stay readable (counters), nothing may be added.
    pub closed: bool,
    /// Asks the reader to hand over everything left and then end (after the programs are detached).
    draining: Arc<AtomicBool>,
    tgids: HashMap<MapData, u32, u32>,
    cgroups: HashMap<MapData, u64, u32>,
    counters: PerCpuArray<MapData, u64>,
    /// Propagation: the outbound sockets of propagating cgroups (the sk_msg program is attached to
    /// it, so it lives as long as the capture); None without propagation.
    _sockhash: Option<SockHash<MapData, u64>>,
    /// Propagating cgroups (by id) and their sock_ops attachments.
    propagating: std::collections::HashMap<u64, SockOpsLinkId>,
    pub propagation: bool,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
    recycled: Sender<u32>,
    /// Wakes the reader from its poll (drain, close): an eventfd.
    wake: Arc<std::os::fd::OwnedFd>,
    /// Per buffer: whether JavaScript holds it (handed over, not recycled yet).
    with_js: Arc<Vec<AtomicBool>>,
    pub stats: Arc<ReaderStats>,
    pub cgroups_enabled: bool,
}

fn is_permission(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
}

fn permission_error(what: &str, cause: impl std::fmt::Display) -> napi::Error {
    error(
        "permission",
        format!("{what}: {cause}: the agent needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN); run as root or grant them"),
    )
}

/// The error and its causes, "a: b: c" (aya's top-level messages alone hide the detail).
fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Some errors already print their cause.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

fn load_error(e: EbpfError) -> napi::Error {
    let detail = chain(&e);
    match &e {
        EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error, .. })
            if is_permission(io_error) =>
        {
            permission_error(&format!("creating map {name}"), io_error)
        }
        EbpfError::BtfError(_) | EbpfError::NoBTF | EbpfError::BtfRelocationError(_)
            if !diagnostics::btf_available() =>
        {
            error(
            "btf",
                format!("{detail} (CO-RE relocation needs the kernel's BTF: /sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF)"),
            )
        }
        _ => error("load", format!("loading the BPF object: {detail}")),
    }
}

fn program_error(name: &str, action: &str, e: ProgramError) -> napi::Error {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            // The socket programs (propagation) need CAP_NET_ADMIN besides; the tracepoints do not.
            let socket_program = name == SK_MSG || name == SOCKOPS;
            if is_permission(&io_error)
                && !diagnostics::missing_capabilities(socket_program).is_empty()
            {
                permission_error(&format!("loading program {name}"), io_error)
            } else {
                error(
                    "verifier",
                    format!(
                        "program {name} was rejected by the verifier ({io_error}):\n{verifier_log}"
                    ),
                )
            }
        }
        ProgramError::SyscallError(ref syscall) if is_permission(&syscall.io_error) => {
            permission_error(&format!("{action} program {name}"), &e)
        }
        other => {
            let message = format!("{action} program {name}: {}", chain(&other));
            if !diagnostics::tracefs_mounted() {
                error(
                    "tracefs",
                    format!(
                        "{message}: tracefs is not mounted (mount -t tracefs nodev {})",
                        diagnostics::TRACEFS
                    ),
                )
            } else {
                error("attach", message)
            }
        }
    }
}

/// Blocks every signal for the calling thread while alive. The verifier gives up with EAGAIN whenever
/// a signal is pending for the loading thread (SIGPROF of a profiler, SIGCHLD, ...), which says
/// nothing of the program; blocked signals are delivered once the programs are loaded.
struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    fn new() -> Self {
        // SAFETY: plain sigset_t values handed to the libc calls that initialise and use them.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut previous: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
            SignalsBlocked(previous)
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// Tracepoint a program attaches to, from its name: iii_btf_X → BTF tracepoint X, iii_exit_X →
/// syscalls/sys_exit_X (the stdout/stderr capture only), iii_sched_* → raw tracepoint sched_*.
enum Target {
    Btf(String),
    Syscall(String),
    Raw(String),
}

fn target_of(name: &str) -> Option<Target> {
    let rest = name.strip_prefix("iii_")?;
    if let Some(tracepoint) = rest.strip_prefix("btf_") {
        return Some(Target::Btf(tracepoint.to_owned()));
    }
    if let Some(syscall) = rest.strip_prefix("exit_") {
        return Some(Target::Syscall(format!("sys_exit_{syscall}")));
    }
    rest.starts_with("sched_")
        .then(|| Target::Raw(rest.to_owned()))
}

/// Attaches the sock_ops program to a cgroup v2 directory. A BPF link: it runs alongside any other
/// programs attached there (the link API takes no multi-attach flag: EINVAL with one).
fn attach_sockops(ebpf: &mut Ebpf, path: &str) -> napi::Result<SockOpsLinkId> {
    let directory =
        std::fs::File::open(path).map_err(|e| error("invalid", format!("cgroup {path}: {e}")))?;
    let program: &mut SockOps = ebpf
        .program_mut(SOCKOPS)
        .ok_or_else(|| error("load", format!("the BPF object has no program {SOCKOPS}")))?
        .try_into()
        .map_err(|e| program_error(SOCKOPS, "attaching", e))?;
    program
        .attach(directory, CgroupAttachMode::Single)
        .map_err(|e| program_error(SOCKOPS, &format!("attaching to cgroup {path}:"), e))
}

fn take_map<T>(ebpf: &mut Ebpf, name: &str) -> napi::Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| error("load", format!("the BPF object has no map {name}")))?;
    T::try_from(map).map_err(|e| error("load", format!("map {name}: {e}")))
}

fn take_ring(ebpf: &mut Ebpf, name: &str) -> napi::Result<Ring> {
    let map = ebpf
        .take_map(name)
        .ok_or_else(|| error("load", format!("the BPF object has no map {name}")))?;
    Ring::new(map, name).map_err(|e| error("load", e))
}

impl Running {
    pub fn start(
        settings: Settings,
        slabs: Vec<Slab>,
        pids: &[u32],
        cgroups: &[(String, u64)],
        on_batch: BatchCallback,
        stats: Arc<ReaderStats>,
    ) -> napi::Result<Self> {
        let missing = diagnostics::missing_capabilities(settings.propagation);
        if !missing.is_empty() {
            let needed = if settings.propagation {
                "CAP_BPF, CAP_PERFMON and, for trace propagation, CAP_NET_ADMIN"
            } else {
                "CAP_BPF and CAP_PERFMON"
            };
            return Err(error(
                "permission",
                format!(
                    "missing {}: the agent needs {needed} (or CAP_SYS_ADMIN) to load eBPF programs",
                    missing.join(" and ")
                ),
            ));
        }
        // Only the write syscalls' tracepoints (stdout/stderr through syscalls) are found by their
        // tracefs ids; the BTF and raw tracepoints attach by name.
        if settings.stdio_capture == 2 && !diagnostics::tracefs_mounted() {
            let hint = format!("mount -t tracefs nodev {}", diagnostics::TRACEFS);
            if !settings.mount_tracefs {
                return Err(error("tracefs", format!("tracefs is not mounted ({hint})")));
            }
            diagnostics::mount_tracefs().map_err(|e| {
                error(
                    "tracefs",
                    format!("tracefs is not mounted and mounting it failed: {e} ({hint})"),
                )
            })?;
        }
        if !diagnostics::btf_available() {
            return Err(error(
                "btf",
                "/sys/kernel/btf/vmlinux is missing: the kernel needs CONFIG_DEBUG_INFO_BTF",
            ));
        }

        let payload_limit = settings.payload_bytes.min(layout::MAX_PAYLOAD);
        let filter_cgroups: u8 = settings.cgroups_enabled.into();
        let (pidns_dev, pidns_ino) = settings.pid_namespace.unwrap_or((0, 0));
        let adopt_entrants: u8 =
            (settings.adopt_entrants && settings.pid_namespace.is_some()).into();
        let mut ebpf = EbpfLoader::new()
            .set_global("payload_limit", &payload_limit, true)
            .set_global("wakeup_bytes", &settings.wakeup_bytes, true)
            .set_global("filter_cgroups", &filter_cgroups, true)
            .set_global("filter_pids", &u8::from(settings.pid_targets), true)
            .set_global("stdio_capture", &settings.stdio_capture, true)
            .set_global("pidns_dev", &pidns_dev, true)
            .set_global("pidns_ino", &pidns_ino, true)
            .set_global("adopt_entrants", &adopt_entrants, true)
            .set_max_entries("iii_events", settings.ring_buffer_bytes)
            // iii_socks, the sockets' local storage: aya 0.13 creates it but has no Rust type for
            // it (user space never reads it).
            .allow_unsupported_maps()
            // Only used when a load fails (aya retries with a log buffer then); DEBUG is the
            // usual instruction-by-instruction trace, VERBOSE would be megabytes.
            .verifier_log_level(VerifierLogLevel::DEBUG | VerifierLogLevel::STATS)
            .load(&settings.object)
            .map_err(load_error)?;

        let mut tgids: HashMap<MapData, u32, u32> = take_map(&mut ebpf, "iii_tgids")?;
        let mut cgroups_map: HashMap<MapData, u64, u32> = take_map(&mut ebpf, "iii_cgroups")?;
        let counters: PerCpuArray<MapData, u64> = take_map(&mut ebpf, "iii_counters")?;
        let ring = take_ring(&mut ebpf, "iii_events")?;
        let losses = take_ring(&mut ebpf, "iii_losses")?;
        for pid in pids {
            tgids
                .insert(pid, layout::DEFAULT_TARGET, 0)
                .map_err(|e| error("map", format!("adding pid {pid}: {e}")))?;
        }
        for (_, id) in cgroups {
            cgroups_map
                .insert(id, layout::DEFAULT_TARGET, 0)
                .map_err(|e| error("map", format!("adding cgroup {id}: {e}")))?;
        }

        let names: Vec<String> = ebpf.programs().map(|(name, _)| name.to_owned()).collect();
        let btf = Btf::from_sys_fs()
            .map_err(|e| error("btf", format!("reading /sys/kernel/btf/vmlinux: {e}")))?;
        {
            let _signals = SignalsBlocked::new();
            for name in &names {
                let Some(target) = target_of(name) else {
                    continue;
                };
                // Syscall tracepoints slow every syscall on the host down: only for stdout/stderr.
                if matches!(target, Target::Syscall(_)) && settings.stdio_capture != 2 {
                    continue;
                }
                let Some(program) = ebpf.program_mut(name) else {
                    continue;
                };
                match target {
                    Target::Btf(tracepoint) => {
                        let program: &mut BtfTracePoint = program
                            .try_into()
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .load(&tracepoint, &btf)
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .attach()
                            .map_err(|e| program_error(name, "attaching", e))?;
                    }
                    Target::Syscall(tracepoint) => {
                        let program: &mut TracePoint = program
                            .try_into()
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .load()
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .attach("syscalls", &tracepoint)
                            .map_err(|e| program_error(name, "attaching", e))?;
                    }
                    Target::Raw(tracepoint) => {
                        let program: &mut RawTracePoint = program
                            .try_into()
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .load()
                            .map_err(|e| program_error(name, "loading", e))?;
                        program
                            .attach(&tracepoint)
                            .map_err(|e| program_error(name, "attaching", e))?;
                    }
                }
            }
        }
        let mut propagating = std::collections::HashMap::new();
        let sockhash = if settings.propagation {
            let sockhash: SockHash<MapData, u64> = take_map(&mut ebpf, "iii_sockhash")?;
            let _signals = SignalsBlocked::new();
            let program: &mut SkMsg = ebpf
                .program_mut(SK_MSG)
                .ok_or_else(|| error("load", format!("the BPF object has no program {SK_MSG}")))?
                .try_into()
                .map_err(|e| program_error(SK_MSG, "loading", e))?;
            program
                .load()
                .map_err(|e| program_error(SK_MSG, "loading", e))?;
            program
                .attach(sockhash.fd())
                .map_err(|e| program_error(SK_MSG, "attaching", e))?;
            let program: &mut SockOps = ebpf
                .program_mut(SOCKOPS)
                .ok_or_else(|| error("load", format!("the BPF object has no program {SOCKOPS}")))?
                .try_into()
                .map_err(|e| program_error(SOCKOPS, "loading", e))?;
            program
                .load()
                .map_err(|e| program_error(SOCKOPS, "loading", e))?;
            for (path, id) in cgroups {
                propagating.insert(*id, attach_sockops(&mut ebpf, path)?);
            }
            Some(sockhash)
        } else {
            None
        };

        let stop = Arc::new(AtomicBool::new(false));
        let draining = Arc::new(AtomicBool::new(false));
        // SAFETY: eventfd returns a new fd (or -1), owned from here on.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(error(
                "io",
                format!("eventfd: {}", std::io::Error::last_os_error()),
            ));
        }
        // SAFETY: `wake` is a valid fd nobody else owns.
        let wake = Arc::new(unsafe {
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(wake)
        });
        let (recycled, free) = std::sync::mpsc::channel();
        let with_js: Arc<Vec<AtomicBool>> =
            Arc::new(slabs.iter().map(|_| AtomicBool::new(false)).collect());
        for index in 0..slabs.len() as u32 {
            let _ = recycled.send(index);
        }
        let reader = {
            let stop = stop.clone();
            let draining = draining.clone();
            let stats = stats.clone();
            let reader = Reader {
                wake: wake.clone(),
                ring,
                losses,
                notices: Notices::default(),
                on_batch,
                stats,
                interval: settings.poll_interval,
                slabs,
                free,
                with_js: with_js.clone(),
                clock: clock::Offset::system(),
            };
            std::thread::Builder::new()
                .name("iii-ringbuf".into())
                .spawn(move || reader.run(&stop, &draining))
                .map_err(|e| error("io", format!("starting the reader thread: {e}")))?
        };
        Ok(Running {
            ebpf: Some(ebpf),
            closed: false,
            draining,
            wake,
            tgids,
            cgroups: cgroups_map,
            counters,
            _sockhash: sockhash,
            propagating,
            propagation: settings.propagation,
            stop,
            reader: Some(reader),
            recycled,
            with_js,
            stats,
            cgroups_enabled: settings.cgroups_enabled,
        })
    }

    /// Batches handed to JavaScript and not recycled yet.
    pub fn in_flight(&self) -> usize {
        self.with_js
            .iter()
            .filter(|held| held.load(Ordering::Acquire))
            .count()
    }

    /// JavaScript is done with the batch in buffer `index`: the reader may fill it again.
    pub fn recycle(&self, index: u32) -> napi::Result<()> {
        let Some(held) = self.with_js.get(index as usize) else {
            return Err(error("invalid", format!("no batch buffer {index}")));
        };
        // Handing a buffer back twice would let the reader fill it while JavaScript reads it.
        if !held.swap(false, Ordering::AcqRel) {
            return Err(error(
                "invalid",
                format!("batch buffer {index} is not JavaScript's to recycle (recycled twice?)"),
            ));
        }
        // The reader is gone once the capture closed: nothing left to fill.
        let _ = self.recycled.send(index);
        Ok(())
    }

    pub fn add_pid(&mut self, pid: u32, target: u32) -> napi::Result<()> {
        self.tgids
            .insert(pid, target, 0)
            .map_err(|e| error("map", format!("adding pid {pid}: {e}")))
    }

    pub fn remove_pid(&mut self, pid: u32) -> napi::Result<()> {
        match self.tgids.remove(&pid) {
            Ok(()) => Ok(()),
            // Not traced (any more: the exit probe forgets exited processes).
            Err(aya::maps::MapError::SyscallError(ref e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(error("map", format!("removing pid {pid}: {e}"))),
        }
    }

    /// `propagate`: the cgroup's directory, whose outbound requests get a traceparent.
    pub fn add_cgroup(
        &mut self,
        id: u64,
        target: u32,
        propagate: Option<&str>,
    ) -> napi::Result<()> {
        if let Some(path) = propagate {
            if !self.propagation {
                return Err(error(
                    "invalid",
                    "propagation is off: start the capture with propagation: true",
                ));
            }
            if !self.propagating.contains_key(&id) {
                let ebpf = self
                    .ebpf
                    .as_mut()
                    .ok_or_else(|| error("closed", "the capture is closed"))?;
                let link = attach_sockops(ebpf, path)?;
                self.propagating.insert(id, link);
            }
        }
        self.cgroups
            .insert(id, target, 0)
            .map_err(|e| error("map", format!("adding cgroup {id}: {e}")))
    }

    pub fn remove_cgroup(&mut self, id: u64) -> napi::Result<()> {
        if let Some(link) = self.propagating.remove(&id) {
            if let Some(program) = self
                .ebpf
                .as_mut()
                .and_then(|ebpf| ebpf.program_mut(SOCKOPS))
                .and_then(|program| <&mut SockOps>::try_from(program).ok())
            {
                // Detaching from a cgroup whose directory is gone already fails harmlessly.
                let _ = program.detach(link);
            }
        }
        match self.cgroups.remove(&id) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::SyscallError(ref e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(error("map", format!("removing cgroup {id}: {e}"))),
        }
    }

    /// A kernel counter (`layout::COUNTER_*`), summed over CPUs.
    pub fn kernel_counter(&self, counter: u32) -> napi::Result<u64> {
        let values = self
            .counters
            .get(&counter, 0)
            .map_err(|e| error("map", format!("reading counters: {e}")))?;
        Ok(values.iter().sum())
    }

    /// Detaches every program (nothing new is captured) and lets the reader hand over everything
    /// still in the rings, however many batches that takes, then the end-of-capture batch.
    pub fn drain(&mut self) {
        self.ebpf.take();
        self.draining.store(true, Ordering::Release);
        self.wake_reader();
    }

    /// Interrupts the reader's wait (its poll, or its wait for a buffer).
    fn wake_reader(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        let _ = self.recycled.send(WAKE);
    }

    /// Detaches every program, hands over what fits in the free buffers (the rest is counted as
    /// abandoned), then stops the reader. The maps stay readable.
    pub fn close(&mut self) {
        self.ebpf.take();
        self.closed = true;
        self.stop.store(true, Ordering::Release);
        self.wake_reader();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.close();
    }
}

/// Loss notices waiting for their place in a batch: just before the next record of their
/// connection (pid + fd), or at the end of a batch that emptied the ring. Keyed by connection, in
/// ring order within each.
#[derive(Default)]
struct Notices {
    by_connection: std::collections::HashMap<u64, std::collections::VecDeque<[u8; LOST]>>,
    count: usize,
}

const LOST: usize = std::mem::size_of::<layout::LostEvent>();

struct Reader {
    wake: Arc<std::os::fd::OwnedFd>,
    ring: Ring,
    /// The programs' loss notices (records `ring` could not take).
    losses: Ring,
    notices: Notices,
    on_batch: BatchCallback,
    stats: Arc<ReaderStats>,
    interval: Duration,
    slabs: Vec<Slab>,
    /// Buffers JavaScript has handed back.
    free: Receiver<u32>,
    with_js: Arc<Vec<AtomicBool>>,
    /// The batches' monotonic-to-unix offset, kept stable across batches.
    clock: clock::Offset<fn(libc::clockid_t) -> i64>,
}

const BATCH_HEADER: usize = std::mem::size_of::<layout::BatchHeader>();

/// Where a `fill` stopped.
#[derive(PartialEq)]
enum Filled {
    /// The buffer cannot take the next record: more are waiting.
    Full,
    /// The rings are empty and every loss notice was placed.
    Empty,
}

/// Appends one record, length-prefixed, at `at`; returns the position after it.
fn put(out: &mut [u8], at: usize, record: &[u8]) -> usize {
    out[at..at + 4].copy_from_slice(&(record.len() as u32).to_le_bytes());
    out[at + 4..at + 4 + record.len()].copy_from_slice(record);
    at + 4 + record.len()
}

/// Moves a connection's notices up to time `until` into `out` at `at`, keeping `reserve` bytes free
/// after them; returns how many it placed and whether it placed all of those.
fn place(
    queue: &mut std::collections::VecDeque<[u8; LOST]>,
    out: &mut [u8],
    at: &mut usize,
    until: u64,
    reserve: usize,
) -> (usize, bool) {
    let mut placed = 0;
    while let Some(notice) = queue.front() {
        if layout::timestamp(notice) > until {
            break;
        }
        if *at + 4 + LOST + reserve > out.len() {
            return (placed, false);
        }
        *at = put(out, *at, notice);
        queue.pop_front();
        placed += 1;
    }
    (placed, true)
}

impl Notices {
    /// Moves the loss ring's notices here (counted, not kept, beyond `MAX_PENDING_NOTICES`).
    fn take(&mut self, losses: &mut Ring, stats: &ReaderStats) {
        while let Some(notice) = losses.next() {
            if notice.len() != LOST || self.count >= MAX_PENDING_NOTICES {
                stats.notices_overflowed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            let mut copy = [0u8; LOST];
            copy.copy_from_slice(&notice);
            self.by_connection
                .entry(layout::connection_key(&copy))
                .or_default()
                .push_back(copy);
            self.count += 1;
        }
    }
}

/// How often the reader hands the process's free malloc memory back to the kernel.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// glibc keeps freed chunks inside its heap, and fragmentation stops it from shrinking: the start-up
/// (module compilation, the first pod list) left ~4 MB of the agent's 14 MB malloc heap free and
/// resident. `malloc_trim` gives such pages back (the allocator stays usable; CPU: one walk of the
/// free lists every few seconds). Here because this thread runs as long as the capture, off the
/// event loop.
#[cfg(target_env = "gnu")]
fn trim_malloc() {
    // SAFETY: no preconditions; takes the allocator's locks like any malloc call.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn trim_malloc() {}

impl Reader {
    fn run(mut self, stop: &AtomicBool, draining: &AtomicBool) {
        let fd = self.ring.as_raw_fd();
        let timeout = self.interval.as_millis().min(i32::MAX as u128) as i32;
        let mut slab: Option<u32> = None;
        let mut trimmed = Instant::now();
        loop {
            if trimmed.elapsed() >= TRIM_EVERY {
                trim_malloc();
                trimmed = Instant::now();
            }
            let stopping = stop.load(Ordering::Acquire);
            let drain = draining.load(Ordering::Acquire);
            let mut emptied = false;
            // Fill buffers while the ring has records and JavaScript has buffers to spare.
            loop {
                if slab.is_none() {
                    slab = self.free.try_iter().find(|&index| index != WAKE);
                }
                let Some(index) = slab else { break };
                let (records, filled) = self.fill(index);
                if records > 0 {
                    self.send(index);
                    slab = None;
                }
                if filled == Filled::Empty {
                    emptied = true;
                    break;
                }
            }
            if stopping {
                // Closing runs on the JS thread, which cannot hand buffers back meanwhile: what
                // does not fit in the free ones is counted, not waited for.
                let mut left = self.notices.count as u64;
                while self.ring.next().is_some() {
                    left += 1;
                }
                while self.losses.next().is_some() {
                    left += 1;
                }
                self.stats.abandoned.fetch_add(left, Ordering::Relaxed);
                break;
            }
            // Draining: the programs are detached, so an empty ring stays empty.
            if drain && emptied {
                break;
            }
            // Notices are taken even while every buffer is out, so that the small loss ring keeps
            // room for the losses of a backlog.
            self.notices.take(&mut self.losses, &self.stats);
            if slab.is_none() {
                // Every buffer is with JavaScript: records wait in the ring (the kernel counts
                // what it cannot take) until one comes back.
                slab = self
                    .free
                    .recv_timeout(self.interval)
                    .ok()
                    .filter(|&index| index != WAKE);
                continue;
            }
            if drain {
                continue;
            }
            let mut pollfds = [
                libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds. Woken by the programs' forced wakeups, `wake_reader` or
            // the timeout.
            unsafe { libc::poll(pollfds.as_mut_ptr(), 2, timeout) };
            if pollfds[1].revents != 0 {
                let mut count: u64 = 0;
                // SAFETY: reads the eventfd's 8-byte counter into a valid u64 (resets it).
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            }
        }
        self.on_batch
            .call(END, ThreadsafeFunctionCallMode::NonBlocking);
    }

    /// Moves records from the rings into buffer `index` until they are empty or the buffer cannot
    /// take the next one; returns how many records (loss notices included) and where it stopped.
    /// A loss notice goes just before the next record of its connection (the order the connection
    /// lived it in), or at the end once the ring is empty.
    fn fill(&mut self, index: u32) -> (u32, Filled) {
        let slab = self.slabs[index as usize];
        // SAFETY: JavaScript lent this buffer and leaves it alone from recycling it until it is
        // handed over again (`send`); `Capture` keeps it alive until this thread has stopped.
        let out = unsafe { std::slice::from_raw_parts_mut(slab.address as *mut u8, slab.len) };
        let mut at = BATCH_HEADER;
        let mut count = 0u32;
        let mut losses = 0u64;
        let filled = loop {
            if at + MAX_RECORD > out.len() {
                break Filled::Full;
            }
            // A notice is in the loss ring before any later record of its connection is in the
            // event ring (the program wrote it during the earlier syscall): taking notices after
            // the record below was seen committed finds every notice that must precede it.
            let Some(record) = self.ring.next() else {
                self.notices.take(&mut self.losses, &self.stats);
                // A record may have landed between the look and the notices: look again.
                if self.ring.next().is_some_and(|record| {
                    std::mem::forget(record); // peeked, left in the ring
                    true
                }) {
                    continue;
                }
                // Empty: every waiting notice's predecessors were read; place them all.
                let mut placed_all = true;
                for queue in self.notices.by_connection.values_mut() {
                    let (placed, all) = place(queue, out, &mut at, u64::MAX, 0);
                    self.notices.count -= placed;
                    count += placed as u32;
                    losses += placed as u64;
                    placed_all &= all;
                }
                self.notices
                    .by_connection
                    .retain(|_, queue| !queue.is_empty());
                break if placed_all {
                    Filled::Empty
                } else {
                    Filled::Full
                };
            };
            self.notices.take(&mut self.losses, &self.stats);
            if self.notices.count > 0 {
                let key = layout::connection_key(&record);
                let ts = layout::timestamp(&record);
                if let Some(queue) = self.notices.by_connection.get_mut(&key) {
                    let (placed, all) = place(queue, out, &mut at, ts, 4 + record.len());
                    self.notices.count -= placed;
                    count += placed as u32;
                    losses += placed as u64;
                    if queue.is_empty() {
                        self.notices.by_connection.remove(&key);
                    }
                    if !all {
                        // Leave the record in the ring: its notices come first, in the next batch.
                        std::mem::forget(record);
                        break Filled::Full;
                    }
                }
            }
            if !layout::is_valid_record(&record) {
                self.stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            at = put(out, at, &record);
            count += 1;
        };
        if count > 0 {
            let offset = self.clock.at(Instant::now());
            out[0..8].copy_from_slice(&offset.to_le_bytes());
            out[8..12].copy_from_slice(&count.to_le_bytes());
            out[12..16].copy_from_slice(&(at as u32).to_le_bytes());
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .records
                .fetch_add(count.into(), Ordering::Relaxed);
            self.stats.losses.fetch_add(losses, Ordering::Relaxed);
        }
        (count, filled)
    }

    fn send(&self, index: u32) {
        self.with_js[index as usize].store(true, Ordering::Release);
        self.on_batch
            .call(index, ThreadsafeFunctionCallMode::NonBlocking);
    }
}
