// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * iii traffic capture, records laid out in iii_capture.h, one event ring buffer.
 *
 * Hooks, chosen for what they cost the processes that are NOT traced (every process on the host runs
 * them, so the first thing each does is the "is this process traced?" check, before any copy):
 *
 * - tp_btf/sock_send_length, tp_btf/sock_recv_length: BTF tracepoints inside the socket layer, run
 *   for every socket send and receive whatever the syscall, and for nothing else. Unlike syscall
 *   tracepoints they do not put every syscall of every process on the kernel's slow path (measured
 *   on this kernel: ~15% of a hello-world server's throughput lost with syscall tracepoints attached
 *   and nothing traced). The payload is read from the syscall's own arguments (bpf_task_pt_regs).
 * - tp_btf/inet_sock_set_state: a traced TCP socket closed (FIN or reset), found through its socket
 *   storage whatever task the transition runs in.
 * - A socket's first traced record comes with an open record (its addresses), decided by the
 *   socket's BPF local storage: no accept/connect hooks, no map keyed by fd.
 * - raw sched_process_fork / sched_process_exit: children of traced pids, exited processes.
 * - Log lines: writes to stdout/stderr when these are sockets (a command the agent started) through
 *   the socket hooks; tracepoint/syscalls/sys_exit_write(v) only where they may be anything else
 *   (`stdio_capture` 2: the loader leaves them out otherwise, and with them the syscall slow path).
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
const volatile __u32 wakeup_bytes = 256 * 1024; /* wake the reader once this much is pending */
const volatile __u8 filter_pids = 1;            /* 1: trace processes in iii_tgids */
/* Log lines from writes to stdout/stderr: 0 none (a node agent reads the kubelet's files); 1 through
 * the socket hooks, when they are sockets (a command the agent started with socketpairs for its
 * output, as libuv's pipes are); 2 through the write syscalls' tracepoints (any fd 1/2: pipes,
 * files, ttys), at the cost of the syscall slow path. */
const volatile __u8 stdio_capture = 2;
const volatile __u8 filter_cgroups = 0;         /* 1: also trace processes in iii_cgroups */
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
#define AF_UNIX 1
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

/* What a traced process's socket is known as, in the socket's own BPF storage (freed with it). */
struct iii_sock {
	__u64 ids;    /* the process that first used it, as events report it; 0: not announced yet */
	__s32 fd;     /* its fd there (-1 when the syscall did not say) */
	__u32 target; /* that process's target */
	__u8 closed;
	__u8 reserved[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct iii_sock);
} iii_socks SEC(".maps");

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
	__u32 *target;
	if (filter_pids) {
		__u32 tgid = ids >> 32;
		target = bpf_map_lookup_elem(&iii_tgids, &tgid);
		if (target)
			return *target;
	}
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

/* The current syscall's number and first four arguments, as the caller passed them. */
struct syscall_args {
	__u64 nr;
	__u64 arg[4];
};

/* Read back from the user registers the kernel saved at the syscall's entry, which its own work
 * leaves alone (only the return value register changes at exit). On x86-64 (rdi, rsi, rdx, r10) these are
 * plain loads through the task's BTF pointer; elsewhere libbpf's CO-RE macros know the register
 * that keeps the first argument (arm64's x0 holds the return value by exit: orig_x0). */
static __always_inline void syscall_args(struct syscall_args *out)
{
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
#if defined(__TARGET_ARCH_x86)
	out->nr = regs->orig_ax;
	out->arg[0] = regs->di;
	out->arg[1] = regs->si;
	out->arg[2] = regs->dx;
	out->arg[3] = regs->r10;
#else
	out->nr = BPF_CORE_READ(regs, syscallno);
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

/* The syscall (of those whose buffers we can read) from its number. */
#if defined(__TARGET_ARCH_x86)
#define NR_READ 0
#define NR_WRITE 1
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#else /* the generic table: arm64, riscv */
#define NR_READ 63
#define NR_WRITE 64
#define NR_READV 65
#define NR_WRITEV 66
#define NR_SENDFILE 71
#define NR_SENDTO 206
#define NR_RECVFROM 207
#define NR_SENDMSG 211
#define NR_RECVMSG 212
#endif

static __always_inline __u8 syscall_of(__u64 nr)
{
	switch (nr) {
	case NR_READ: return III_SYS_READ;
	case NR_WRITE: return III_SYS_WRITE;
	case NR_READV: return III_SYS_READV;
	case NR_WRITEV: return III_SYS_WRITEV;
	case NR_SENDFILE: return III_SYS_SENDFILE;
	case NR_SENDTO: return III_SYS_SENDTO;
	case NR_RECVFROM: return III_SYS_RECVFROM;
	case NR_SENDMSG: return III_SYS_SENDMSG;
	case NR_RECVMSG: return III_SYS_RECVMSG;
	default: return III_SYS_OTHER;
	}
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

/* Copies what the syscall moved into the scratch record's payload (at most `want` bytes), from the
 * buffers its arguments name; returns how many bytes were copied. */
static __always_inline __u32 copy_payload(__u8 *payload, __u8 syscall, struct syscall_args *args,
					  __u32 want)
{
	__u64 buf = args->arg[1];
	switch (syscall) {
	case III_SYS_READV:
	case III_SYS_WRITEV:
		return copy_iov(payload, (const struct iovec *)buf, args->arg[2], want);
	case III_SYS_RECVMSG:
	case III_SYS_SENDMSG: {
		struct user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)buf))
			return 0;
		return copy_iov(payload, msg.msg_iov, msg.msg_iovlen, want);
	}
	case III_SYS_READ:
	case III_SYS_WRITE:
	case III_SYS_RECVFROM:
	case III_SYS_SENDTO: {
		__u32 copied = bounded(want);
		return bpf_probe_read_user(payload, copied, (void *)buf) ? 0 : copied;
	}
	default:
		return 0; /* sendfile (bytes from a file), other syscalls: the length only */
	}
}

/* Built twice (scripts/build-native.sh): without propagation the object has no socket map, which
 * the kernel only creates for CAP_NET_ADMIN, so a capture-only agent needs CAP_BPF + CAP_PERFMON. */
#if III_PROPAGATION
#include "iii_propagation.bpf.h"
#endif

/* Writes a data record of `ret` bytes moved by `syscall` on `fd`, payload copied from its buffers.
 * `sk`: the socket (NULL for stdout/stderr through the write syscalls). */
static __always_inline void emit_data(struct sock *sk, __u64 ids, __u32 target, __s32 fd, __u8 syscall,
				      bool egress, long ret, struct syscall_args *args)
{
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
	__u32 copied = copy_payload(payload, syscall, args, want);
	event->payload_len = copied;
#if III_PROPAGATION
	if (sk && fd > 2)
		propagation_data(sk, &event->header, payload, bounded(copied), egress, ret);
#endif
	__u32 size = bounded(copied) + sizeof(struct iii_data_event);
	if (bpf_ringbuf_output(&iii_events, event, size, wakeup_flag(size, false)))
		record_loss(&event->header, ret);
}

/* Reads both ends of an IPv4/IPv6 socket; false for other families (unix sockets). */
static __always_inline bool fill_addresses(struct iii_open_event *event, struct sock *sk)
{
	__u16 family = sk->__sk_common.skc_family;
	if (family == AF_INET) {
		event->header.family = 4;
		bpf_probe_read_kernel(event->local_addr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_probe_read_kernel(event->peer_addr, 4, &sk->__sk_common.skc_daddr);
	} else if (family == AF_INET6) {
		event->header.family = 6;
		bpf_probe_read_kernel(event->local_addr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_probe_read_kernel(event->peer_addr, 16, &sk->__sk_common.skc_v6_daddr);
	} else {
		return false;
	}
	event->local_port = sk->__sk_common.skc_num;
	event->peer_port = bpf_ntohs(sk->__sk_common.skc_dport);
	return true;
}

/* The open record: a traced process's first use of this socket. */
static __always_inline void emit_open(struct sock *sk, __u64 ids, __u32 target, __s32 fd)
{
	struct iii_open_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(ids, target, fd, III_EVENT_OPEN, 0);
		return;
	}
	__builtin_memset(event->local_addr, 0, sizeof(event->local_addr));
	__builtin_memset(event->peer_addr, 0, sizeof(event->peer_addr));
	fill_header(&event->header, ids, target, fd, III_EVENT_OPEN, 0);
	event->local_port = 0;
	event->peer_port = 0;
	event->reserved = 0;
	fill_addresses(event, sk);
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
}

/* A send or receive on a socket: traced process, stream socket (TCP, unix stream; datagrams such as
 * DNS or QUIC are not HTTP/1.x), bytes moved; then an open record on the socket's first use, and the
 * data record. */
static __always_inline void sock_data(struct sock *sk, int ret, int flags, bool egress)
{
	if (ret <= 0 || (!egress && (flags & MSG_PEEK)))
		return;
	__u64 ids;
	__u32 target;
	if (!traced_ids(&ids, &target))
		return;
	if (sk->sk_type != SOCK_STREAM)
		return;
	struct syscall_args args;
	syscall_args(&args);
	__u8 syscall = syscall_of(args.nr);
	__s32 fd = syscall == III_SYS_OTHER ? -1 : (__s32)args.arg[0];
	if (fd == 1 || fd == 2) {
		/* stdout/stderr as a socket: log lines, not traffic (unless the write tracepoints have them) */
		if (stdio_capture == 1 && egress)
			emit_data(sk, ids, target, fd, syscall, egress, ret, &args);
		return;
	}
	struct iii_sock *known = bpf_sk_storage_get(&iii_socks, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (known) {
		if (!known->ids) {
			known->ids = ids;
			known->fd = fd;
			known->target = target;
			emit_open(sk, ids, target, fd);
		} else if (fd < 0 && known->ids == ids) {
			fd = known->fd;
		}
	}
	if (fd < 0)
		return; /* a socket only ever used through io_uring & co.: no connection to key it by */
	emit_data(sk, ids, target, fd, syscall, egress, ret, &args);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(iii_btf_sock_send_length, struct sock *sk, int ret, int flags)
{
	sock_data(sk, ret, flags, true);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(iii_btf_sock_recv_length, struct sock *sk, int ret, int flags)
{
	sock_data(sk, ret, flags, false);
	return 0;
}

/* A TCP socket a traced process used leaves ESTABLISHED/CLOSE_WAIT for good: it sent its FIN
 * (FIN_WAIT1, LAST_ACK) or was reset (CLOSE). Runs for every TCP state change on the host; only
 * sockets with storage (announced ones) go further, whatever task (or softirq) this runs in. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(iii_btf_inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (newstate != TCP_FIN_WAIT1 && newstate != TCP_LAST_ACK && newstate != TCP_CLOSE)
		return 0;
	struct iii_sock *known = bpf_sk_storage_get(&iii_socks, (struct sock *)sk, 0, 0);
	if (!known || !known->ids || known->closed)
		return 0;
	known->closed = 1;
	struct iii_close_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		record_lost_header(known->ids, known->target, known->fd, III_EVENT_CLOSE, 0);
		return 0;
	}
	fill_header(&event->header, known->ids, known->target, known->fd, III_EVENT_CLOSE, 0);
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
	return 0;
}

/* Log lines from the process's own writes to stdout/stderr, at syscall exit: attached only when
 * `stdio_capture` is 2 (the loader skips iii_exit_* otherwise), since any syscall tracepoint puts
 * every syscall on the host on the slow path. */
static __always_inline void exit_stdio(struct trace_event_raw_sys_exit *ctx, __u8 syscall)
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
	__s32 fd = (__s32)args.arg[0];
	if (fd != 1 && fd != 2)
		return;
	emit_data(NULL, ids, target, fd, syscall, true, ret, &args);
}

SEC("tracepoint/syscalls/sys_exit_write")
int iii_exit_write(struct trace_event_raw_sys_exit *ctx) { exit_stdio(ctx, III_SYS_WRITE); return 0; }

SEC("tracepoint/syscalls/sys_exit_writev")
int iii_exit_writev(struct trace_event_raw_sys_exit *ctx) { exit_stdio(ctx, III_SYS_WRITEV); return 0; }

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
