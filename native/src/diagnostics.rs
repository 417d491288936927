//! Checks done before touching the kernel, so failures name their cause: a missing capability,
//! an unmounted tracefs. Error messages start with a stable code (`permission: ...`) that the
//! TypeScript wrapper maps to tagged errors.
use std::ffi::CString;
use std::fs;
use std::path::Path;

pub const TRACEFS: &str = "/sys/kernel/tracing";
const DEBUGFS_TRACING: &str = "/sys/kernel/debug/tracing";
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub fn error(code: &str, message: impl std::fmt::Display) -> napi::Error {
    napi::Error::from_reason(format!("{code}: {message}"))
}

fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Names of the capabilities this process lacks for loading and attaching the programs; trace
/// propagation's socket map and socket programs need CAP_NET_ADMIN besides.
pub fn missing_capabilities(propagation: bool) -> Vec<&'static str> {
    let Some(caps) = effective_capabilities() else {
        return vec![];
    };
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) {
        return vec![];
    }
    [
        (CAP_BPF, "CAP_BPF", true),
        (CAP_PERFMON, "CAP_PERFMON", true),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN", propagation),
    ]
    .into_iter()
    .filter(|&(cap, _, needed)| needed && !has(cap))
    .map(|(_, name, _)| name)
    .collect()
}

fn has_events(root: &str) -> bool {
    Path::new(root).join("events/syscalls").is_dir()
}

pub fn tracefs_mounted() -> bool {
    has_events(TRACEFS) || has_events(DEBUGFS_TRACING)
}

/// Mounts tracefs at /sys/kernel/tracing (needs CAP_SYS_ADMIN); Ok(false) when it already was.
pub fn mount_tracefs() -> Result<bool, String> {
    if tracefs_mounted() {
        return Ok(false);
    }
    let source = CString::new("nodev").unwrap_or_default();
    let target = CString::new(TRACEFS).unwrap_or_default();
    let fstype = CString::new("tracefs").unwrap_or_default();
    // SAFETY: all pointers are valid NUL-terminated strings; no mount data.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(true)
}

pub fn btf_available() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}
