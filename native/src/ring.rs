//! A BPF ring buffer read through one mapping of its data pages.
//!
//! aya's `RingBuf` maps the data pages twice in a row (the kernel allows it so that a record
//! wrapping around the end reads as one slice). The memory is the same, but the process's RSS
//! counts every page twice: 16 MB for the 8 MiB event ring, which the node agent's budget (≤ 100 MB
//! RSS, issue #12) cannot spare. Here the data pages are mapped once; the rare record that wraps
//! around is copied into a scratch buffer (the reader copies every record into a batch anyway).
//! Positions and memory ordering as aya and libbpf read them (kernel/bpf/ringbuf.c).

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use aya::maps::{Map, MapData};

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER: usize = 8;

struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: libc::c_int, offset: usize) -> std::io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's fd; unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned null"),
            len,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `new` with this length, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

pub struct Ring {
    map: MapData,
    /// The consumer page (read-write: the position the kernel may overwrite up to).
    consumer: Mapping,
    /// The producer page, then the data pages once.
    producer: Mapping,
    page: usize,
    size: usize,
    /// Where this reader is (bytes since the start, as the kernel counts).
    pos: usize,
    /// The producer position last read: no atomic load while records are known to be there.
    pos_cache: usize,
    /// A record that wraps around the end, joined.
    scratch: Vec<u8>,
}

// SAFETY: the mappings are only touched through `&mut self` (one reader thread).
unsafe impl Send for Ring {}

/// The record at the reader's position: consumed when dropped, left in the ring if forgotten.
pub struct Record<'a> {
    ring: &'a mut Ring,
    offset: usize,
    len: usize,
    wrapped: bool,
}

impl std::ops::Deref for Record<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        if self.wrapped {
            &self.ring.scratch[..self.len]
        } else {
            // SAFETY: offset + len ≤ size (not wrapped), inside the data pages.
            unsafe { std::slice::from_raw_parts(self.ring.data().add(self.offset), self.len) }
        }
    }
}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        self.ring.consume(self.len);
    }
}

impl Ring {
    pub fn new(map: Map, name: &str) -> Result<Self, String> {
        let Map::RingBuf(map) = map else {
            return Err(format!("map {name} is not a ring buffer"));
        };
        let size = map
            .info()
            .map_err(|e| format!("map {name}: {e}"))?
            .max_entries() as usize;
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)
            .map_err(|e| format!("map {name}: mapping its consumer page: {e}"))?;
        let producer = Mapping::new(fd, page + size, libc::PROT_READ, page)
            .map_err(|e| format!("map {name}: mapping its data: {e}"))?;
        // SAFETY: the consumer page starts with the consumer position.
        let pos = unsafe { consumer.ptr.cast::<AtomicUsize>().as_ref() }.load(Ordering::SeqCst);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            size,
            pos,
            pos_cache: pos,
            scratch: Vec::new(),
        })
    }

    fn data(&self) -> *const u8 {
        // SAFETY: the data pages follow the producer page in the mapping.
        unsafe { self.producer.ptr.as_ptr().add(self.page) }
    }

    fn consume(&mut self, len: usize) {
        self.pos += (HEADER + len).next_multiple_of(8);
        // SeqCst pairs with the kernel's commit (xchg): either the next look sees the producer's
        // new record, or the producer sees this position (and the room it frees).
        // SAFETY: the consumer page starts with the consumer position.
        unsafe { self.consumer.ptr.cast::<AtomicUsize>().as_ref() }
            .store(self.pos, Ordering::SeqCst);
    }

    /// The next committed record, skipping discarded ones; None when empty or the next is busy.
    pub fn next(&mut self) -> Option<Record<'_>> {
        loop {
            if self.pos == self.pos_cache {
                // The kernel writes it with Release once the header is visible.
                // SAFETY: the producer page starts with the producer position.
                self.pos_cache = unsafe { self.producer.ptr.cast::<AtomicUsize>().as_ref() }
                    .load(Ordering::Acquire);
                if self.pos == self.pos_cache {
                    return None;
                }
            }
            let mask = self.size - 1;
            let offset = self.pos & mask;
            // Records start 8-byte aligned, so a header never wraps.
            // SAFETY: offset + 8 ≤ size.
            let header =
                unsafe { &*(self.data().add(offset) as *const AtomicU32) }.load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                return None;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if header & DISCARD_BIT != 0 {
                self.consume(len);
                continue;
            }
            let start = (offset + HEADER) & mask;
            let wrapped = start + len > self.size;
            if wrapped {
                let first = self.size - start;
                self.scratch.resize(len.max(self.scratch.len()), 0);
                // SAFETY: both pieces lie inside the data pages; scratch holds len bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.data().add(start),
                        self.scratch.as_mut_ptr(),
                        first,
                    );
                    std::ptr::copy_nonoverlapping(
                        self.data(),
                        self.scratch.as_mut_ptr().add(first),
                        len - first,
                    );
                }
            }
            return Some(Record {
                ring: self,
                offset: start,
                len,
                wrapped,
            });
        }
    }
}

impl AsRawFd for Ring {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}
