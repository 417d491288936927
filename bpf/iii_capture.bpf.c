// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * iii traffic capture: syscall tracepoints only (kprobes are not available on every kernel we
 * target), one ring buffer, records laid out in iii_capture.h.
 *
 * Cost model: every probe below runs for every process on the host, so the first thing each one
 * does is the "is this process traced?" check (one hash lookup, a second one only when cgroup
 * targets are enabled; with a pid namespace set, a bpf_get_ns_current_pid_tgid call before it).
 * Untraced processes pay for that and nothing else.
 *
 * The data, accept and connect probes run at syscall exit only: by then the kernel has filled the
 * buffers and the return value says how many bytes moved, and the caller's arguments are still in
 * the user registers the kernel saved at entry (bpf_task_pt_regs). Reading them back there, instead
 * of saving them at enter in a map, halves the probes that run per syscall and spares a map update
 * and delete on the hottest path (bench:ebpf-capture prints the per-program cost). Only close needs
 * its enter (the fd is gone by exit): its argument is saved in an LRU hash keyed by pid_tgid and
 * removed at exit.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "iii_capture.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Load-time settings (the loader rewrites .rodata; the verifier prunes dead branches). */
const volatile __u32 payload_limit = III_DEFAULT_PAYLOAD; /* payload bytes per data event */
const volatile __u32 wakeup_bytes = 64 * 1024; /* wake the reader once this much is pending */
const volatile __u8 filter_cgroups = 0;         /* 1: also trace processes in iii_cgroups */
/* 1: writes to fds 1 and 2 are captured (log lines); 0 when logs come another way (a node agent
 * reads the container runtime's log files), so they cost nothing past the target check. */
const volatile __u8 capture_stdio = 1;
/* A pid namespace (its nsfs device and inode, as stat(2) of /proc/PID/ns/pid gives them), or 0:
 * with one set, processes are known by their pids in that namespace (the target map, fork/exit
 * tracking, the pid/tid in events) and processes outside it are never traced. An agent in a pod
 * with shareProcessNamespace sees the app's processes only under those pids, never the host's. */
const volatile __u64 pidns_dev = 0;
const volatile __u64 pidns_ino = 0;
/* With a pid namespace: 1 = trace every process forked into it by a parent outside it (how a
 * container runtime starts a container's first process in a pod's shared namespace). */
const volatile __u8 adopt_entrants = 0;

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10
#define MSG_PEEK 2
#define SOCK_STREAM 1

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* the loader may resize it */
} iii_events SEC(".maps");

/* Where a record the event ring could not take is reported (iii_lost_event): small, since it only
 * fills when the reader has fallen behind, and drained by the reader even while it waits for
 * JavaScript to hand a batch buffer back. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10);
} iii_losses SEC(".maps");

/* The two target maps. A value is the target a process is traced as (user space's index of the
 * identity its telemetry carries: which pod and container), copied into every record's header. */

/* Traced processes (tgid → target), filled from user space, grown by fork, shrunk by exit. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u32);
} iii_tgids SEC(".maps");

/* Traced cgroup v2 ids (cgroup inode number → target), filled from user space. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} iii_cgroups SEC(".maps");

/* A close(2) between its enter and exit. */
struct iii_closing {
	__u64 ids; /* the caller's pid_tgid as events report it (see current_ids) */
	__s32 fd;
	__u32 target;
};

/* Sockets being closed, keyed by pid_tgid (one syscall per thread at a time). LRU so that a thread
 * killed inside close cannot leak an entry forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct iii_closing);
} iii_closing SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, III_COUNTER_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} iii_counters SEC(".maps");

/* A data event is assembled here, then copied into the ring buffer at its real size
 * (bpf_ringbuf_reserve only takes constant sizes). Twice III_MAX_PAYLOAD: see copy_iov. */
struct iii_scratch {
	__u8 bytes[sizeof(struct iii_data_event) + 2 * III_MAX_PAYLOAD];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iii_scratch);
} iii_scratch SEC(".maps");

/* Only failures are counted in the kernel (user space counts what it receives). */
static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&iii_counters, &counter);
	if (value)
		*value += 1;
}

/* The event ring refused a record: count it, and tell user space which connection lost what (the
 * loss ring), so that it can count the requests lost with it instead of pairing the wrong request
 * and response. Only this failure path pays for it. */
static __always_inline void record_loss(const struct iii_event_header *lost, __u32 total_len)
{
	count(III_COUNTER_DROPPED);
	struct iii_lost_event *notice = bpf_ringbuf_reserve(&iii_losses, sizeof(*notice), 0);
	if (!notice) {
		count(III_COUNTER_UNRECORDED);
		return;
	}
	notice->header = *lost;
	notice->header.kind = III_EVENT_LOST;
	notice->total_len = total_len;
	notice->lost_kind = lost->kind;
	notice->reserved[0] = 0;
	notice->reserved[1] = 0;
	notice->reserved[2] = 0;
	bpf_ringbuf_submit(notice, BPF_RB_NO_WAKEUP);
}

/* The current task's pid_tgid as events report it: the kernel's own (pid_tgid), or with a pid
 * namespace set its ids there. False when the task is outside that namespace (never traced): the
 * helper fails for it. Without a namespace the verifier prunes the helper call. */
static __always_inline bool current_ids(__u64 pid_tgid, __u64 *ids)
{
	if (!pidns_ino) {
		*ids = pid_tgid;
		return true;
	}
	struct bpf_pidns_info ns;
	if (bpf_get_ns_current_pid_tgid(pidns_dev, pidns_ino, &ns, sizeof(ns)))
		return false;
	*ids = (__u64)ns.tgid << 32 | ns.pid;
	return true;
}

/* The target the current task is traced as, or 0 when it is not traced. `ids` from current_ids. */
static __always_inline __u32 target_of(__u64 ids)
{
	__u32 tgid = ids >> 32;
	__u32 *target = bpf_map_lookup_elem(&iii_tgids, &tgid);
	if (target)
		return *target;
	if (filter_cgroups) {
		__u64 cgroup = bpf_get_current_cgroup_id();
		target = bpf_map_lookup_elem(&iii_cgroups, &cgroup);
		if (target)
			return *target;
	}
	return 0;
}

/* Wake the reader once, when this record takes the backlog across wakeup_bytes. Below it, and while
 * the reader is still catching up above it, its timer (100 ms) is enough: waking it for every record
 * of a backlog (an irq_work and often an IPI each) would cost the traced process far more than the
 * capture itself. `reserved`: the record is already counted in the ring's pending bytes. */
static __always_inline __u64 wakeup_flag(__u64 size, bool reserved)
{
	__u64 pending = bpf_ringbuf_query(&iii_events, BPF_RB_AVAIL_DATA);
	if (!reserved)
		pending += size;
	return pending >= wakeup_bytes && pending - size < wakeup_bytes ? BPF_RB_FORCE_WAKEUP
									 : BPF_RB_NO_WAKEUP;
}

static __always_inline void fill_header(struct iii_event_header *header, __u64 ids, __u32 target,
					__s32 fd, __u8 kind, __u8 syscall)
{
	header->timestamp_ns = bpf_ktime_get_ns();
	header->pid = ids >> 32;
	header->tid = (__u32)ids;
	header->fd = fd;
	header->kind = kind;
	header->syscall = syscall;
	header->direction = 0;
	header->family = 0;
	header->target = target;
	header->reserved = 0;
}

/* A record of `kind` could not be reserved: report it with a header of its own. */
static __always_inline void record_lost_header(__u64 ids, __u32 target, __s32 fd, __u8 kind,
					       __u8 syscall)
{
	struct iii_event_header header;
	fill_header(&header, ids, target, fd, kind, syscall);
	record_loss(&header, 0);
}

static __always_inline struct file *fd_to_file(__s32 fd)
{
	/* BTF pointers: plain (fault-safe) loads instead of one helper call per hop. */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	if (fd < 0 || (__u32)fd >= fdt->max_fds)
		return NULL;
	struct file *file = NULL;
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
	return file;
}

/* Stream sockets only (TCP, unix stream): datagrams (DNS, QUIC) are not HTTP/1.x and would only
 * pose as connections. A socket's inode sits inside struct socket_alloc right after its struct
 * socket, so the type is one read away from the inode. */
static __always_inline bool is_stream_socket_file(struct file *file)
{
	if (!file)
		return false;
	struct inode *inode = BPF_CORE_READ(file, f_inode);
	umode_t mode = BPF_CORE_READ(inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return false;
	struct socket_alloc *alloc =
		(void *)inode - bpf_core_field_offset(struct socket_alloc, vfs_inode);
	return BPF_CORE_READ(alloc, socket.type) == SOCK_STREAM;
}

static __always_inline struct sock *socket_sock(struct file *file)
{
	if (!is_stream_socket_file(file))
		return NULL;
	struct socket *socket = BPF_CORE_READ(file, private_data);
	return socket ? BPF_CORE_READ(socket, sk) : NULL;
}

/* The first four arguments of the current syscall, as the caller passed them. */
struct syscall_args {
	__u64 arg[4];
};

/* Read back at exit from the user registers the kernel saved at entry, which a syscall's own work
 * leaves alone (only the return value register changes). On x86-64 (rdi, rsi, rdx, r10) these are
 * plain loads through the task's BTF pointer; elsewhere libbpf's CO-RE macros know the register
 * that keeps the first argument (arm64's x0 holds the return value by exit: orig_x0). */
static __always_inline void syscall_args(struct syscall_args *out)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_x86)
	out->arg[0] = regs->di;
	out->arg[1] = regs->si;
	out->arg[2] = regs->dx;
	out->arg[3] = regs->r10;
#else
	out->arg[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	out->arg[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	out->arg[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	out->arg[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
#endif
}

/* The current task's ids and target, when it is traced. Cheapest checks first: these run for every
 * process. */
static __always_inline bool traced_ids(__u64 *ids, __u32 *target)
{
	if (!current_ids(bpf_get_current_pid_tgid(), ids))
		return false;
	*target = target_of(*ids);
	return *target != 0;
}

static __always_inline bool is_egress(__u8 syscall)
{
	return syscall == III_SYS_WRITE || syscall == III_SYS_WRITEV || syscall == III_SYS_SENDTO ||
	       syscall == III_SYS_SENDMSG || syscall == III_SYS_SENDFILE;
}

static __always_inline __u32 bounded(__u64 n)
{
	/* The verifier needs a provable bound on every copy length. */
	if (n > III_MAX_PAYLOAD)
		n = III_MAX_PAYLOAD;
	return n;
}

/* Copies the first `want` bytes spread over an iovec array. Each chunk starts at an offset below
 * III_MAX_PAYLOAD and is at most III_MAX_PAYLOAD long, hence the 2x scratch payload. */
static __always_inline __u32 copy_iov(__u8 *dst, const struct iovec *iov, __u64 iovcnt, __u32 want)
{
	__u32 offset = 0;
#pragma unroll
	for (int i = 0; i < III_MAX_IOV; i++) {
		if (i >= iovcnt || offset >= want)
			break;
		struct iovec vec;
		if (bpf_probe_read_user(&vec, sizeof(vec), &iov[i]))
			break;
		__u64 n = vec.iov_len;
		if (n > want - offset)
			n = want - offset;
		__u32 at = offset & (III_MAX_PAYLOAD - 1);
		__u32 len = bounded(n);
		if (bpf_probe_read_user(dst + at, len, vec.iov_base))
			break;
		offset = at + len;
	}
	return offset;
}

/* Data syscalls, at exit: only stream sockets carry traffic and only writes to stdout/stderr are log
 * lines, so everything else (files, pipes, eventfds) stops before any copy. `flags_arg`: the
 * argument holding the recv flags (MSG_PEEK reads are read again for real later), or -1. */
static __always_inline void exit_data(struct trace_event_raw_sys_exit *ctx, __u8 syscall, int flags_arg)
{
	long ret = ctx->ret;
	if (ret <= 0)
		return;
	__u64 ids;
	__u32 target;
	if (!traced_ids(&ids, &target))
		return;
	struct syscall_args args;
	syscall_args(&args);
	if (flags_arg >= 0 && (args.arg[flags_arg & 3] & MSG_PEEK))
		return;
	__s32 fd = (__s32)args.arg[0];
	bool egress = is_egress(syscall);
	if (!(capture_stdio && egress && (fd == 1 || fd == 2)) && !is_stream_socket_file(fd_to_file(fd)))
		return;

	__u32 zero = 0;
	struct iii_scratch *scratch = bpf_map_lookup_elem(&iii_scratch, &zero);
	if (!scratch)
		return;
	struct iii_data_event *event = (struct iii_data_event *)scratch->bytes;
	__u8 *payload = scratch->bytes + sizeof(struct iii_data_event);
	fill_header(&event->header, ids, target, fd, III_EVENT_DATA, syscall);
	event->header.direction = egress ? III_EGRESS : III_INGRESS;
	event->ret = ret;
	event->total_len = ret;

	__u32 limit = payload_limit < III_MAX_PAYLOAD ? payload_limit : III_MAX_PAYLOAD;
	__u32 want = (__u64)ret < limit ? (__u32)ret : limit;
	__u32 copied = 0;
	__u64 buf = args.arg[1];
	switch (syscall) {
	case III_SYS_READV:
	case III_SYS_WRITEV:
		copied = copy_iov(payload, (const struct iovec *)buf, args.arg[2], want);
		break;
	case III_SYS_SENDFILE:
		break; /* the bytes come from a file, not user memory: length only */
	case III_SYS_RECVMSG:
	case III_SYS_SENDMSG: {
		struct user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)buf) == 0)
			copied = copy_iov(payload, msg.msg_iov, msg.msg_iovlen, want);
		break;
	}
	default:
		copied = bounded(want);
		if (bpf_probe_read_user(payload, copied, (void *)buf))
			copied = 0;
	}
	event->payload_len = copied;

	__u32 size = bounded(copied) + sizeof(struct iii_data_event);
	if (bpf_ringbuf_output(&iii_events, event, size, wakeup_flag(size, false)))
		record_loss(&event->header, ret);
}

/* Reads both ends of an IPv4/IPv6 socket; false for other families (unix sockets etc.). */
static __always_inline bool fill_addresses(struct iii_conn_event *event, struct sock *sk)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family == AF_INET) {
		event->header.family = 4;
		bpf_core_read(event->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(event->peer_addr, 4, &sk->__sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		event->header.family = 6;
		bpf_core_read(event->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(event->peer_addr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return false;
	}
	event->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	event->peer_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	return true;
}

static __always_inline void emit_conn(__u64 ids, __u32 target, __s32 fd, __u8 kind, __u8 syscall,
				      __s32 ret)
{
	struct sock *sk = socket_sock(fd_to_file(fd));
	if (!sk)
		return;
	struct iii_conn_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(ids, target, fd, kind, syscall);
		return;
	}
	__builtin_memset(event->local_addr, 0, sizeof(event->local_addr));
	__builtin_memset(event->peer_addr, 0, sizeof(event->peer_addr));
	fill_header(&event->header, ids, target, fd, kind, syscall);
	event->ret = ret;
	if (!fill_addresses(event, sk)) {
		bpf_ringbuf_discard(event, BPF_RB_NO_WAKEUP);
		return;
	}
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
}

static __always_inline void exit_accept(struct trace_event_raw_sys_exit *ctx, __u8 syscall)
{
	long ret = ctx->ret;
	__u64 ids;
	__u32 target;
	if (ret < 0 || !traced_ids(&ids, &target))
		return;
	/* The return value is the accepted socket: its addresses are the connection's. */
	emit_conn(ids, target, (__s32)ret, III_EVENT_ACCEPT, syscall, (__s32)ret);
}

/* Data syscalls: one probe each, at exit (see the top of this file). */

/* read(2): how Node (libuv) and most servers receive from TCP sockets. */
SEC("tracepoint/syscalls/sys_exit_read")
int iii_exit_read(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_READ, -1); return 0; }

/* write(2): socket sends, and stdout/stderr lines for the log capture. */
SEC("tracepoint/syscalls/sys_exit_write")
int iii_exit_write(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_WRITE, -1); return 0; }

/* readv(2): scatter reads (args: fd, iovec array, count). */
SEC("tracepoint/syscalls/sys_exit_readv")
int iii_exit_readv(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_READV, -1); return 0; }

/* writev(2): how Node writes HTTP headers + body in one syscall. */
SEC("tracepoint/syscalls/sys_exit_writev")
int iii_exit_writev(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_WRITEV, -1); return 0; }

/* recvfrom(2)/recv(3): Go, Python and many C servers receive this way (flags: the 4th argument). */
SEC("tracepoint/syscalls/sys_exit_recvfrom")
int iii_exit_recvfrom(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_RECVFROM, 3); return 0; }

/* sendto(2)/send(3): the sending side of the same. */
SEC("tracepoint/syscalls/sys_exit_sendto")
int iii_exit_sendto(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_SENDTO, -1); return 0; }

/* recvmsg(2): msghdr-based reads (args: fd, msghdr, flags); iovecs are walked at exit. */
SEC("tracepoint/syscalls/sys_exit_recvmsg")
int iii_exit_recvmsg(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_RECVMSG, 2); return 0; }

/* sendmsg(2): msghdr-based writes (Java NIO, some proxies). */
SEC("tracepoint/syscalls/sys_exit_sendmsg")
int iii_exit_sendmsg(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_SENDMSG, -1); return 0; }

/* sendfile(2): static file servers (nginx, Apache) send bodies without copying them through user
 * space; the length keeps the byte stream accountable even though there is no payload to copy. */
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int iii_exit_sendfile64(struct trace_event_raw_sys_exit *ctx) { exit_data(ctx, III_SYS_SENDFILE, -1); return 0; }

/* accept(2): inbound connections (server spans); the return value is the new socket. */
SEC("tracepoint/syscalls/sys_exit_accept")
int iii_exit_accept(struct trace_event_raw_sys_exit *ctx) { exit_accept(ctx, III_SYS_ACCEPT); return 0; }

/* accept4(2): what Node, Go and most modern servers actually call. */
SEC("tracepoint/syscalls/sys_exit_accept4")
int iii_exit_accept4(struct trace_event_raw_sys_exit *ctx) { exit_accept(ctx, III_SYS_ACCEPT4); return 0; }

#define EINPROGRESS 115

/* connect(2) exit: outbound connections (client spans). By now the kernel bound a local port and set
 * the peer, so both ends are readable from struct sock. Non-blocking sockets (Node) return
 * -EINPROGRESS, which still counts. */
SEC("tracepoint/syscalls/sys_exit_connect")
int iii_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	__u64 ids;
	__u32 target;
	if ((ret != 0 && ret != -EINPROGRESS) || !traced_ids(&ids, &target))
		return 0;
	struct syscall_args args;
	syscall_args(&args);
	emit_conn(ids, target, (__s32)args.arg[0], III_EVENT_CONNECT, III_SYS_CONNECT, (__s32)ret);
	return 0;
}

/* close(2) enter: ends a connection; only sockets matter, and the fd is gone by exit, so decide now. */
SEC("tracepoint/syscalls/sys_enter_close")
int iii_enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 ids;
	__u32 target;
	if (!traced_ids(&ids, &target))
		return 0;
	__s32 fd = (__s32)ctx->args[0];
	if (!is_stream_socket_file(fd_to_file(fd)))
		return 0;
	/* Keyed by the kernel's pid_tgid whatever the numbering: the exit probe, which runs for every
	 * process, finds its entry with the cheapest helper. */
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct iii_closing closing = {.ids = ids, .fd = fd, .target = target};
	bpf_map_update_elem(&iii_closing, &pid_tgid, &closing, BPF_ANY);
	return 0;
}

/* close(2) exit: report the close only if it succeeded; always removes what enter saved. */
SEC("tracepoint/syscalls/sys_exit_close")
int iii_exit_close(struct trace_event_raw_sys_exit *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct iii_closing *saved = bpf_map_lookup_elem(&iii_closing, &pid_tgid);
	if (!saved)
		return 0;
	struct iii_closing closing = *saved;
	bpf_map_delete_elem(&iii_closing, &pid_tgid);
	if (ctx->ret != 0)
		return 0;
	struct iii_close_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(closing.ids, closing.target, closing.fd, III_EVENT_CLOSE, III_SYS_CLOSE);
		return 0;
	}
	fill_header(&event->header, closing.ids, closing.target, closing.fd, III_EVENT_CLOSE,
		    III_SYS_CLOSE);
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
	return 0;
}

/* A process's number in the namespace at `level` of its pid, and that namespace's inode. */
static __always_inline bool pid_number(struct pid *pid, unsigned int level, __u32 *nr, __u32 *ns_ino)
{
	/* numbers[] is a flexible array: its offset relocated, the index plain arithmetic. */
	void *numbers = (void *)pid + bpf_core_field_offset(struct pid, numbers);
	struct upid upid;
	if (bpf_probe_read_kernel(&upid, sizeof(upid), numbers + (__u64)level * sizeof(struct upid)))
		return false;
	*nr = upid.nr;
	*ns_ino = BPF_CORE_READ(upid.ns, ns.inum);
	return true;
}

/* The child's tgid in the configured numbering, or 0 when it is not a process of the namespace
 * (it was cloned into a new one). The parent is in the namespace (its ids resolved), so the
 * namespace sits at the parent's level and the child's number there is numbers[level]. */
static __always_inline __u32 child_tgid_in_ns(struct task_struct *child)
{
	struct task_struct *parent = bpf_get_current_task_btf();
	unsigned int level = BPF_CORE_READ(parent, thread_pid, level);
	struct pid *pid = BPF_CORE_READ(child, thread_pid);
	__u32 nr, ns_ino;
	if (!pid || BPF_CORE_READ(pid, level) != level || !pid_number(pid, level, &nr, &ns_ino))
		return 0;
	return nr;
}

/* The child is traced as its parent is (same target). */
static __always_inline void emit_fork(__u64 parent_ids, __u32 target, __u32 child_tgid)
{
	bpf_map_update_elem(&iii_tgids, &child_tgid, &target, BPF_ANY);
	struct iii_fork_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(parent_ids, target, -1, III_EVENT_FORK, 0);
		return;
	}
	fill_header(&event->header, parent_ids, target, -1, III_EVENT_FORK, 0);
	event->child_pid = child_tgid;
	event->reserved = 0;
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
}

/* adopt_entrants: the parent is outside the namespace; if the child's own namespace is the
 * configured one, it entered from outside (setns + fork: a container (re)started into the pod) and
 * is traced from its first instruction. Reported as a fork by parent 0, which is how /proc in the
 * namespace shows its parent. (A child forked inside the namespace by an untraced parent, e.g. the
 * agent's own, is not an entrant.) Forks are rare next to syscalls, so the reads cost little. */
static __always_inline void adopt_entrant(struct task_struct *child)
{
	struct pid *pid = BPF_CORE_READ(child, thread_pid);
	__u32 nr, ns_ino;
	if (!pid || !pid_number(pid, BPF_CORE_READ(pid, level), &nr, &ns_ino) || ns_ino != pidns_ino)
		return;
	emit_fork(0, III_DEFAULT_TARGET, nr);
}

/* sched_process_fork: children of a traced process (workers, `sh -c`, cluster forks) are traced
 * too. Raw tracepoint because the child's tgid (to tell a new process from a new thread) is only
 * in its task_struct. Runs in the parent. */
SEC("raw_tracepoint/sched_process_fork")
int iii_sched_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	/* Plain pointer arithmetic: args[] is a zero-length array, not a CO-RE relocatable field. */
	struct task_struct *child = (struct task_struct *)((__u64 *)ctx)[1];
	__u64 ids;
	if (!current_ids(pid_tgid, &ids)) {
		if (adopt_entrants)
			adopt_entrant(child);
		return 0;
	}
	__u32 target = target_of(ids);
	if (!target)
		return 0;
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	if (child_tgid == (__u32)(pid_tgid >> 32))
		return 0; /* a new thread of a traced process: already covered */
	if (pidns_ino) {
		child_tgid = child_tgid_in_ns(child);
		if (!child_tgid)
			return 0;
	}
	emit_fork(ids, target, child_tgid);
	return 0;
}

/* sched_process_exit: forget exited processes (their pids get reused) and tell user space, which
 * flushes their connections. Only the main thread's exit counts as the process's. */
SEC("raw_tracepoint/sched_process_exit")
int iii_sched_process_exit(struct bpf_raw_tracepoint_args *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 ids;
	if ((__u32)pid_tgid != (__u32)(pid_tgid >> 32) || !current_ids(pid_tgid, &ids))
		return 0;
	__u32 target = target_of(ids);
	if (!target)
		return 0;
	__u32 tgid = ids >> 32;
	bpf_map_delete_elem(&iii_tgids, &tgid);
	struct iii_exit_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(ids, target, -1, III_EVENT_EXIT, 0);
		return 0;
	}
	fill_header(&event->header, ids, target, -1, III_EVENT_EXIT, 0);
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
	return 0;
}
