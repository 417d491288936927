/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The one source of truth for the records iii_capture.bpf.c writes to its ring buffer.
 * native/src/layout.rs and packages/agent/src/internal/EventLayout.ts mirror these structs;
 * packages/agent/test/EventLayout.test.ts proves the three views agree (sizes and offsets).
 *
 * Every record starts with struct iii_event_header. All integers are little-endian host order,
 * except addresses, which are raw network-order bytes (IPv4 in the first 4 bytes).
 * Changing anything here means changing the two mirrors and bumping III_LAYOUT_VERSION.
 */
#ifndef III_CAPTURE_H
#define III_CAPTURE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define III_LAYOUT_VERSION 5

/* Hard upper bound of payload bytes per data event; the load-time setting may lower it.
 * Twice this (the iovec copy needs the slack, see copy_iov) must fit a per-CPU value (32 KiB). */
#define III_MAX_PAYLOAD 8192
/* Payload bytes captured per data event unless the loader says otherwise. */
#define III_DEFAULT_PAYLOAD 4096
/* iovec entries inspected per readv/writev/recvmsg/sendmsg (bounded for the verifier). */
#define III_MAX_IOV 8

enum iii_event_kind {
	III_EVENT_DATA = 1,
	III_EVENT_OPEN = 2, /* a traced process's first use of a socket: its addresses */
	III_EVENT_CLOSE = 3,
	III_EVENT_FORK = 4,
	III_EVENT_EXIT = 5,
	III_EVENT_LOST = 6, /* a record the ring could not take (iii_lost_event, from the loss ring) */
	III_EVENT_TRACE = 7, /* trace propagation: the ids of a request (iii_trace_event) */
};

enum iii_syscall {
	III_SYS_READ = 1,
	III_SYS_WRITE = 2,
	III_SYS_READV = 3,
	III_SYS_WRITEV = 4,
	III_SYS_RECVFROM = 5,
	III_SYS_SENDTO = 6,
	III_SYS_RECVMSG = 7,
	III_SYS_SENDMSG = 8,
	III_SYS_SENDFILE = 9, /* data event with total_len only (payload_len 0) */
	III_SYS_OTHER = 10,   /* socket I/O of another syscall (io_uring, splice, *mmsg): length only */
};

/* The target of processes traced without one of their own (the pids and cgroups given at start, a
 * pid namespace's entrants). */
#define III_DEFAULT_TARGET 1

enum iii_direction {
	III_INGRESS = 1, /* bytes the process received */
	III_EGRESS = 2,  /* bytes the process sent */
};

/* Index into the per-CPU counters map iii_counters. */
enum iii_counter {
	III_COUNTER_DROPPED = 0,    /* records lost because the ring buffer was full */
	III_COUNTER_UNRECORDED = 1, /* of those, losses the loss ring could not record either */
	III_COUNTER_INJECTED = 2,   /* propagation: outbound requests given a traceparent */
	III_COUNTER_CARRIED = 3,    /* propagation: outbound requests that carried their own (untouched) */
	III_COUNTER_UNFRAMED = 4,   /* propagation: connections left alone: bytes it could not frame */
	III_COUNTER_SKIPPED = 5,    /* propagation: requests sent without one: too little room to insert */
	III_COUNTER_COUNT = 6,
};

/* Who a trace record speaks for. */
enum iii_trace_role {
	III_TRACE_SERVER = 1, /* an inbound request a traced thread read: its server span's ids */
	III_TRACE_CLIENT = 2, /* an outbound request the kernel gave a traceparent: its client span's ids */
};

/*
 * How the native addon hands records to JavaScript: batches written into a fixed set of buffers
 * that JavaScript owns and recycles, each made of this header followed by record_count times
 * { __u32 length (little-endian); length bytes of one record }.
 */
struct iii_batch_header {
	__s64 clock_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC, kept across batches (native/src/clock.rs) */
	__u32 record_count;
	__u32 batch_bytes;     /* bytes of the batch, this header included */
};

/* 32 bytes, common to every record. For fork/exit, pid/tid are the parent's / the exiting process's. */
struct iii_event_header {
	__u64 timestamp_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 pid;          /* tgid */
	__u32 tid;
	__s32 fd;           /* -1 for fork/exit (open: -1 when the syscall's fd was not known) */
	__u8 kind;          /* enum iii_event_kind */
	__u8 syscall;       /* enum iii_syscall, 0 for fork/exit */
	__u8 direction;     /* enum iii_direction, 0 unless data */
	__u8 family;        /* open: 4 or 6 for IPv4/IPv6 sockets, 0 for unix ones; else 0 */
	__u32 target;       /* the target the process is traced as: the value user space put in
			       iii_tgids / iii_cgroups (which pod and container it is), never 0 */
	__u32 reserved;
};

/* A read or write on a stream socket (or a write to fd 1/2), followed by payload_len bytes. */
struct iii_data_event {
	struct iii_event_header header;
	__s64 ret;          /* the syscall's return value (> 0: only successful transfers are recorded) */
	__u32 total_len;    /* bytes the syscall moved */
	__u32 payload_len;  /* bytes that follow: min(total_len, the payload setting) */
	__u8 payload[];
};

/* The first record of a socket a traced process uses (before its first data record): who is at
 * either end. Whether the process accepted or connected it is for the bytes to tell (the first
 * request's direction). */
struct iii_open_event {
	struct iii_event_header header;
	__u16 local_port;   /* host order */
	__u16 peer_port;    /* host order */
	__u32 reserved;
	__u8 local_addr[16];
	__u8 peer_addr[16];
};

/* The process closed a socket it opened before (TCP: FIN sent, or reset); header from that open. */
struct iii_close_event {
	struct iii_event_header header;
};

/* A traced process forked; the child is traced from now on. */
struct iii_fork_event {
	struct iii_event_header header;
	__u32 child_pid;
	__u32 reserved;
};

/* A traced process exited (its last thread or its main thread). */
struct iii_exit_event {
	struct iii_event_header header;
};

/*
 * A record the event ring could not take, written to the (small) loss ring instead: user space
 * learns which connection lost what, and where in its stream (the addon puts each notice before
 * that connection's next record). The header is the lost record's (timestamp, pid, tid, fd,
 * syscall, direction) with kind III_EVENT_LOST.
 */
struct iii_lost_event {
	struct iii_event_header header;
	__u32 total_len;    /* bytes the lost syscall moved (data records), else 0 */
	__u8 lost_kind;     /* enum iii_event_kind of the lost record */
	__u8 reserved[3];
};

/*
 * Trace propagation (the `propagation` setting): the W3C ids of one request, as lowercase hex text
 * (what the traceparent header carries, and what telemetry uses). Written just before the data record
 * of the same socket and syscall, with the same timestamp: a server record for an inbound request
 * that record begins, a client record for each request the kernel inserted a traceparent into (its
 * head ends in that record). The header's fd/pid/tid are the data record's.
 */
struct iii_trace_event {
	struct iii_event_header header;
	__u8 role;          /* enum iii_trace_role */
	__u8 has_parent;    /* 0: the span is a root (parent_id is all '0') */
	__u8 reserved[6];
	char trace_id[32];
	char span_id[16];
	char parent_id[16];
	char flags[2];
	__u8 reserved2[6];
};

#endif /* III_CAPTURE_H */
