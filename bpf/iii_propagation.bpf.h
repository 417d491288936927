/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Trace propagation, part of iii_capture.bpf.c (same object: it shares the ring and the counters),
 * compiled in only with III_PROPAGATION (bpf/build/iii_capture_propagation.bpf.o), the object the
 * loader picks when propagation is asked for; it needs CAP_NET_ADMIN besides (the socket map).
 *
 * - iii_sockops (sock_ops, attached to each propagating cgroup v2 directory): the cgroup's outbound
 *   TCP connections, once established, go into iii_sockhash; sockets from before are never touched.
 * - iii_http_inject (sk_msg, attached to iii_sockhash): runs in the sending thread for every message
 *   sent on those sockets, follows the HTTP/1.x framing of the byte stream (request line and headers
 *   byte by byte, bodies by their Content-Length or chunk sizes, without reading them) and, at the
 *   end of each request head that carries no `traceparent`, inserts `traceparent` (and
 *   `x-iii-correlation-id` when absent). Anything it cannot frame (HTTP/2, bare LF, obs-fold,
 *   Transfer-Encoding other than chunked, both CL and TE, heads over 16 KiB, …) leaves the
 *   connection alone for good, counted once (III_COUNTER_UNFRAMED). Upgrades and CONNECT end it too.
 * - The capture's socket hooks: an inbound request read by a traced thread
 *   gets its server span's ids here (a child of its own traceparent, when valid), kept per thread in
 *   iii_serving for the outbound calls that thread makes while it serves exactly that one request,
 *   and reported (iii_trace_event) so that user space's server span uses them; a response written by
 *   the thread ends it. The client ids inserted are reported the same way, before the send's data
 *   record, so the client span user space records is the parent of the downstream server span.
 */

/* The W3C ids of a span as hex text (what the header and the trace records carry). */
struct iii_context {
	char trace_id[32];
	char span_id[16];
	char parent_id[16];
	char flags[2];
	__u8 has_parent;
	__u8 reserved[5];
};

/* The request a thread is serving, by pid_tgid (the kernel's): what its outbound calls continue. */
struct iii_serving {
	struct iii_context context;
	__u32 in_flight; /* requests read and not answered yet: only 1 is unambiguous */
	__u32 reserved;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct iii_serving);
} iii_serving SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);   /* socket cookie */
	__type(value, __u32); /* a socket fd, to user space (which never writes it) */
} iii_sockhash SEC(".maps");

/* Where the framing of a connection's outbound byte stream stands. */
enum iii_tx_phase {
	TX_START = 0,   /* before a request's first byte */
	TX_LINE,        /* in the request line */
	TX_HEADERS,     /* in the header block */
	TX_BODY,        /* `remaining` body bytes to pass */
	TX_CHUNK_SIZE,  /* a chunk-size line (and its extensions) */
	TX_CHUNK_DATA,  /* `remaining` chunk bytes to pass */
	TX_CHUNK_END,   /* the CRLF after a chunk's data */
	TX_TRAILERS,    /* the trailer section after the last chunk */
	TX_OPAQUE,      /* no longer HTTP (upgrade, CONNECT): left alone, not counted */
	TX_DEAD,        /* could not frame: left alone, counted */
};

/* Which header the current line is (known from its name at ':'). */
enum iii_tx_header {
	HDR_OTHER = 0,
	HDR_TRACEPARENT,
	HDR_CORRELATION,
	HDR_CONTENT_LENGTH,
	HDR_TRANSFER_ENCODING,
	HDR_UPGRADE,
};

#define TXF_TRACEPARENT 1
#define TXF_CORRELATION 2
#define TXF_LENGTH 4
#define TXF_CHUNKED 8
#define TXF_TE_OTHER 16
#define TXF_OPAQUE_AFTER 32 /* Upgrade header or CONNECT: what follows the head is not HTTP */
#define TXF_INSERTED 64     /* this head's insertion is done (or not wanted) */
#define TXF_IN_VALUE 128    /* past the current header line's ':' */

#define III_MAX_PENDING 4
#define III_NAME_MAX 32
#define III_MAX_HEAD 16384
#define III_MAX_LINE 8192
#define III_SCAN_WINDOW 4096 /* bytes made linear and scanned per round */
#define III_SCAN_ROUNDS 32   /* rounds per message (a head, a body skip, a chunk … each take one) */

/* An outbound connection's framing, in the socket's own storage (freed with it). */
struct iii_tx {
	__u64 remaining;      /* TX_BODY / TX_CHUNK_DATA: bytes still to pass */
	/* The app's bytes the program framed since the capture's send hook last ran, which then compares
	 * them with the bytes the send accepted (see resync). */
	__u64 processed;
	__u64 number;         /* Content-Length / chunk size being parsed */
	__u64 tail;           /* the request line's last 8 bytes (its HTTP version) */
	__u32 line_len;
	__u32 head_len;
	__u8 phase;           /* enum iii_tx_phase */
	__u8 flags;           /* TXF_* of the current request */
	__u8 header;          /* enum iii_tx_header of the current header line */
	__u8 name_len;        /* bytes of the current name (or value) kept in `name` */
	__u8 pending;         /* contexts in `injected` not reported yet */
	__u8 reserved[3];
	char name[III_NAME_MAX];
	struct iii_context injected[III_MAX_PENDING];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct iii_tx);
} iii_txs SEC(".maps");

/* The context of the request being given its headers (kept off the stack, which is short here). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct iii_context);
} iii_outbound SEC(".maps");

static __always_inline char hex_digit(__u32 value)
{
	value &= 15;
	return value < 10 ? '0' + value : 'a' + value - 10;
}

/* `n` random hex digits (n a multiple of 8). */
static __always_inline void random_hex(char *out, int n)
{
#pragma unroll
	for (int word = 0; word < 4; word++) {
		if (word * 8 >= n)
			break;
		__u32 value = bpf_get_prandom_u32();
#pragma unroll
		for (int i = 0; i < 8; i++)
			out[word * 8 + i] = hex_digit(value >> (28 - 4 * i));
	}
}

/* TAI runs ahead of UTC by the leap seconds (37 since 2017). */
#define TAI_UTC_NS 37000000000ULL

/* A new trace id as user space mints them (TraceContext.newTraceId): the time in milliseconds in the
 * first 6 bytes, so that ids sort by time (obs appends them), then random. */
static __always_inline void new_trace_id(char *out)
{
	__u64 ms = (bpf_ktime_get_tai_ns() - TAI_UTC_NS) / 1000000;
#pragma unroll
	for (int i = 0; i < 12; i++)
		out[i] = hex_digit(ms >> (44 - 4 * i));
	random_hex(out + 12, 16);
	__u32 value = bpf_get_prandom_u32();
#pragma unroll
	for (int i = 0; i < 4; i++)
		out[28 + i] = hex_digit(value >> (12 - 4 * i));
}

static __always_inline void no_parent(struct iii_context *context)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		context->parent_id[i] = '0';
	context->has_parent = 0;
}

/* ---------------------------------------------------------------------------------------------
 * Outbound: the framing state machine and the insertion.
 */

struct scan {
	struct sk_msg_md *msg;
	struct iii_tx *tx;
	__u32 avail; /* linear bytes from msg->data */
	__u32 pos;   /* bytes consumed */
	__u8 stop;   /* enum scan_stop */
};

enum scan_stop {
	STOP_NONE = 0, /* ran out of bytes */
	STOP_INSERT,   /* insert at `pos` (the blank line ending a head) */
	STOP_SKIP,     /* a body or chunk to skip by length */
	STOP_LEFT,     /* opaque or dead */
};

static __always_inline char lower(char c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static __always_inline bool name_is(const char *name, __u8 len, const char *literal, __u8 n)
{
	if (len != n)
		return false;
#pragma unroll
	for (int i = 0; i < III_NAME_MAX; i++) {
		if (i >= n)
			break;
		if (name[i] != literal[i])
			return false;
	}
	return true;
}

static __always_inline __u8 header_of(struct iii_tx *tx)
{
	__u8 len = tx->name_len;
	if (name_is(tx->name, len, "traceparent", 11))
		return HDR_TRACEPARENT;
	if (name_is(tx->name, len, "x-iii-correlation-id", 20))
		return HDR_CORRELATION;
	if (name_is(tx->name, len, "content-length", 14))
		return HDR_CONTENT_LENGTH;
	if (name_is(tx->name, len, "transfer-encoding", 17))
		return HDR_TRANSFER_ENCODING;
	if (name_is(tx->name, len, "upgrade", 7))
		return HDR_UPGRADE;
	return HDR_OTHER;
}

static __always_inline long dead(struct iii_tx *tx, struct scan *s)
{
	tx->phase = TX_DEAD;
	count(III_COUNTER_UNFRAMED);
	s->stop = STOP_LEFT;
	return 1;
}

/* The head ended (its blank line's LF): what follows it. A Content-Length is in `remaining`. */
static __always_inline long head_end(struct iii_tx *tx, struct scan *s)
{
	__u8 flags = tx->flags;
	if ((flags & TXF_TE_OTHER) || ((flags & TXF_CHUNKED) && (flags & TXF_LENGTH)))
		return dead(tx, s);
	if (flags & TXF_TRACEPARENT)
		count(III_COUNTER_CARRIED);
	if (flags & TXF_OPAQUE_AFTER) {
		tx->phase = TX_OPAQUE;
		s->stop = STOP_LEFT;
		return 1;
	}
	tx->line_len = 0;
	tx->name_len = 0;
	tx->number = 0;
	if (flags & TXF_CHUNKED) {
		tx->phase = TX_CHUNK_SIZE;
		return 0;
	}
	if ((flags & TXF_LENGTH) && tx->remaining > 0) {
		tx->phase = TX_BODY;
		s->stop = STOP_SKIP;
		return 1;
	}
	tx->phase = TX_START;
	return 0;
}

/* A header line ended (its LF): what its value said. The value (lowercased, without blanks) is in
 * `name` (Transfer-Encoding), its number in `number` (Content-Length). */
static __always_inline long header_line_end(struct iii_tx *tx, struct scan *s)
{
	switch (tx->header) {
	case HDR_TRACEPARENT:
		tx->flags |= TXF_TRACEPARENT;
		break;
	case HDR_CORRELATION:
		tx->flags |= TXF_CORRELATION;
		break;
	case HDR_CONTENT_LENGTH:
		if ((tx->flags & TXF_LENGTH) || tx->name_len == 0)
			return dead(tx, s); /* repeated, or no digits */
		tx->flags |= TXF_LENGTH;
		tx->remaining = tx->number;
		break;
	case HDR_TRANSFER_ENCODING:
		if (name_is(tx->name, tx->name_len, "chunked", 7))
			tx->flags |= TXF_CHUNKED;
		else
			tx->flags |= TXF_TE_OTHER;
		break;
	case HDR_UPGRADE:
		tx->flags |= TXF_OPAQUE_AFTER;
		break;
	}
	tx->line_len = 0;
	tx->name_len = 0;
	tx->header = HDR_OTHER;
	tx->flags &= ~TXF_IN_VALUE;
	return 0;
}

/* One byte of a header line (not its LF). */
static __always_inline long header_byte(struct iii_tx *tx, struct scan *s, char c)
{
	if (c == '\r')
		return 0; /* before the LF (the value's trailing CR is not kept) */
	if (!(tx->flags & TXF_IN_VALUE)) {
		if (c == ':') {
			tx->header = header_of(tx);
			tx->flags |= TXF_IN_VALUE;
			tx->name_len = 0;
			tx->number = 0;
			return 0;
		}
		if (tx->name_len < III_NAME_MAX)
			tx->name[tx->name_len & (III_NAME_MAX - 1)] = lower(c);
		tx->name_len += tx->name_len < 255;
		return 0;
	}
	if (c == ' ' || c == '\t')
		return 0;
	switch (tx->header) {
	case HDR_CONTENT_LENGTH:
		if (c < '0' || c > '9' || tx->number > (1ULL << 50))
			return dead(tx, s);
		tx->number = tx->number * 10 + (c - '0');
		tx->name_len = 1; /* digits seen */
		return 0;
	case HDR_TRANSFER_ENCODING:
		if (tx->name_len < III_NAME_MAX)
			tx->name[tx->name_len & (III_NAME_MAX - 1)] = lower(c);
		tx->name_len += tx->name_len < 255;
		return 0;
	}
	return 0;
}

static __always_inline int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* One byte of the outbound stream, in the state machine (bpf_loop's callback). */
static long scan_byte(__u64 index, struct scan *s)
{
	if (index >= s->avail || index >= III_SCAN_WINDOW)
		return 1;
	struct sk_msg_md *msg = s->msg;
	__u8 *data = (__u8 *)(long)msg->data;
	__u8 *end = (__u8 *)(long)msg->data_end;
	if (data + index + 1 > end)
		return 1;
	char c = data[index];
	struct iii_tx *tx = s->tx;
	s->pos = index + 1; /* consumed, unless it stops to insert before it */
	switch (tx->phase) {
	case TX_START:
		if (c == '\r' || c == '\n')
			break; /* CRLFs between requests are allowed */
		if (c < 'A' || c > 'Z')
			return dead(tx, s);
		tx->phase = TX_LINE;
		tx->flags = 0;
		tx->line_len = 1;
		tx->head_len = 1;
		tx->name_len = 0;
		tx->remaining = 0;
		tx->tail = (__u8)c;
		break;
	case TX_LINE:
		if (++tx->head_len > III_MAX_LINE)
			return dead(tx, s);
		if (c == '\n') {
			/* "HTTP/1.x\r" ends the line: anything else (HTTP/2's preface, bare LF) is left alone. */
			__u64 tail = tx->tail;
			if (tail != 0x5454502f312e310dULL && tail != 0x5454502f312e300dULL)
				return dead(tx, s);
			tx->phase = TX_HEADERS;
			tx->line_len = 0;
			tx->name_len = 0;
			tx->header = HDR_OTHER;
			break;
		}
		tx->tail = tx->tail << 8 | (__u8)c;
		/* The line's first 8 bytes are "CONNECT ": a tunnel follows the head. */
		if (++tx->line_len == 8 && tx->tail == 0x434f4e4e45435420ULL)
			tx->flags |= TXF_OPAQUE_AFTER;
		break;
	case TX_HEADERS:
		if (++tx->head_len > III_MAX_HEAD)
			return dead(tx, s);
		if (tx->line_len == 0) {
			if ((c == '\r' || c == '\n') && !(tx->flags & TXF_INSERTED)) {
				/* The blank line: the head's headers are all known. */
				tx->flags |= TXF_INSERTED;
				tx->head_len--;
				if (!(tx->flags & TXF_TRACEPARENT)) {
					s->pos = index;
					s->stop = STOP_INSERT;
					return 1;
				}
			}
			if (c == '\r')
				break;
			if (c == '\n')
				return head_end(tx, s);
			if (c == ' ' || c == '\t')
				return dead(tx, s); /* obs-fold */
		}
		if (c == '\n')
			return header_line_end(tx, s);
		tx->line_len++;
		return header_byte(tx, s, c);
	case TX_CHUNK_SIZE:
		if (c == '\n') {
			if (tx->line_len == 0)
				return dead(tx, s);
			tx->line_len = 0;
			if (tx->number == 0) {
				tx->phase = TX_TRAILERS;
				break;
			}
			tx->remaining = tx->number;
			tx->number = 0;
			tx->phase = TX_CHUNK_DATA;
			s->stop = STOP_SKIP;
			return 1;
		}
		if (c == '\r' || tx->name_len)
			break; /* name_len: in the chunk extensions */
		if (c == ';') {
			tx->name_len = 1;
			break;
		}
		int digit = hex_value(c);
		if (digit < 0 || tx->number > (1ULL << 50))
			return dead(tx, s);
		tx->number = tx->number * 16 + digit;
		tx->line_len++;
		break;
	case TX_CHUNK_END:
		if (c == '\r')
			break;
		if (c != '\n')
			return dead(tx, s);
		tx->phase = TX_CHUNK_SIZE;
		tx->line_len = 0;
		tx->name_len = 0;
		tx->number = 0;
		break;
	case TX_TRAILERS:
		if (c == '\n') {
			if (tx->line_len == 0)
				tx->phase = TX_START;
			tx->line_len = 0;
		} else if (c != '\r' || tx->line_len) {
			tx->line_len++;
		}
		break;
	default:
		s->stop = STOP_LEFT;
		return 1;
	}
	return 0;
}

#define TP_PREFIX "traceparent: 00-"
#define CORR_PREFIX "x-iii-correlation-id: "
#define TP_LEN 70   /* "traceparent: 00-" trace "-" span "-" flags CRLF */
#define CORR_LEN 56 /* "x-iii-correlation-id: " trace CRLF */

/* The ids of an outbound request: continuing the request this thread serves when it serves exactly
 * one, else a new trace. */
static __always_inline void outbound_context(struct iii_context *context)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct iii_serving *serving = bpf_map_lookup_elem(&iii_serving, &pid_tgid);
	if (serving && serving->in_flight == 1) {
		__builtin_memcpy(context->trace_id, serving->context.trace_id, 32);
		__builtin_memcpy(context->parent_id, serving->context.span_id, 16);
		context->flags[0] = serving->context.flags[0];
		context->flags[1] = serving->context.flags[1];
		context->has_parent = 1;
	} else {
		new_trace_id(context->trace_id);
		no_parent(context);
		context->flags[0] = '0';
		context->flags[1] = '1';
	}
	random_hex(context->span_id, 16);
}

/* Writes the header lines for `context` at `out` (bytes of the message): traceparent, then
 * (`correlation`) x-iii-correlation-id. Byte by byte: no buffer on the stack. */
static __always_inline void header_text(__u8 *out, const struct iii_context *context, bool correlation)
{
#pragma unroll
	for (int i = 0; i < 16; i++)
		out[i] = TP_PREFIX[i];
#pragma unroll
	for (int i = 0; i < 32; i++)
		out[16 + i] = context->trace_id[i];
	out[48] = '-';
#pragma unroll
	for (int i = 0; i < 16; i++)
		out[49 + i] = context->span_id[i];
	out[65] = '-';
	out[66] = context->flags[0];
	out[67] = context->flags[1];
	out[68] = '\r';
	out[69] = '\n';
	if (!correlation)
		return;
#pragma unroll
	for (int i = 0; i < 22; i++)
		out[TP_LEN + i] = CORR_PREFIX[i];
#pragma unroll
	for (int i = 0; i < 32; i++)
		out[TP_LEN + 22 + i] = context->trace_id[i];
	out[TP_LEN + 54] = '\r';
	out[TP_LEN + 55] = '\n';
}

/* insert_headers left this request as it was (the framing goes on). */
#define NOT_INSERTED 0xffffffff

/* Inserts the headers at message offset `at`. Returns the bytes inserted (0: nothing, and the
 * connection is given up; NOT_INSERTED: this request is sent without them). */
static __noinline __u32 insert_headers(struct sk_msg_md *msg, struct iii_tx *tx, __u32 at)
{
	__u32 zero = 0;
	struct iii_context *context = bpf_map_lookup_elem(&iii_outbound, &zero);
	if (!msg || !tx || !context)
		return 0;
	bool correlation = !(tx->flags & TXF_CORRELATION);
	__u32 len = correlation ? TP_LEN + CORR_LEN : TP_LEN;
	/* A send the socket cannot take whole ends with the rest of the message freed and subtracted
	 * from what the syscall reports accepted, inserted bytes included: the app would then send
	 * again bytes already on the wire. Only insert when the whole message fits the send buffer. */
	struct tcp_sock *tcp = msg->sk ? bpf_skc_to_tcp_sock(msg->sk) : 0;
	if (!tcp)
		return 0;
	__s64 room = (__s64)tcp->inet_conn.icsk_inet.sk.sk_sndbuf - tcp->inet_conn.icsk_inet.sk.sk_wmem_queued;
	if (room < (__s64)msg->size + len) {
		count(III_COUNTER_SKIPPED);
		return NOT_INSERTED;
	}
	outbound_context(context);
	if (bpf_msg_push_data(msg, at, len, 0))
		return 0;
	/* The pushed bytes are a new element of their own: linear once pulled. */
	if (bpf_msg_pull_data(msg, at, at + len, 0)) {
		bpf_msg_pop_data(msg, at, len, 0);
		return 0;
	}
	__u8 *data = (__u8 *)(long)msg->data;
	__u8 *end = (__u8 *)(long)msg->data_end;
	if (data + TP_LEN + CORR_LEN > end && (correlation || data + TP_LEN > end)) {
		bpf_msg_pop_data(msg, at, len, 0);
		return 0;
	}
	if (correlation) {
		if (data + TP_LEN + CORR_LEN > end)
			return 0; /* checked above; for the verifier */
		header_text(data, context, true);
	} else {
		if (data + TP_LEN > end)
			return 0;
		header_text(data, context, false);
	}
	count(III_COUNTER_INJECTED);
	__u8 slot = tx->pending;
	if (slot < III_MAX_PENDING) {
		__builtin_memcpy(&tx->injected[slot & (III_MAX_PENDING - 1)], context, sizeof(*context));
		tx->pending = slot + 1;
	}
	return len;
}

static __always_inline void give_up(struct iii_tx *tx)
{
	if (tx->phase != TX_DEAD && tx->phase != TX_OPAQUE) {
		tx->phase = TX_DEAD;
		count(III_COUNTER_UNFRAMED);
	}
}

/* One message, round by round (bpf_loop's callback): a body or chunk skipped by length, or a window
 * of bytes scanned (and a head's insertion). */
struct message {
	struct sk_msg_md *msg;
	struct iii_tx *tx;
	__u32 size;
	__u32 off;
	__u8 inserted;
};

static long one_round(__u64 round, struct message *m)
{
	struct iii_tx *tx = m->tx;
	__u32 size = m->size;
	__u32 off = m->off;
	if (off >= size || tx->phase >= TX_OPAQUE)
		return 1;
	__u8 phase = tx->phase;
	if (phase == TX_BODY || phase == TX_CHUNK_DATA) {
		__u64 left = size - off;
		if (tx->remaining > left) {
			tx->remaining -= left;
			m->off = size;
			return 1;
		}
		m->off = off + tx->remaining;
		tx->remaining = 0;
		tx->phase = phase == TX_BODY ? TX_START : TX_CHUNK_END;
		return 0;
	}
	__u32 end = size - off > III_SCAN_WINDOW ? off + III_SCAN_WINDOW : size;
	if (bpf_msg_pull_data(m->msg, off, end, 0)) {
		give_up(tx);
		return 1;
	}
	struct scan s = { .msg = m->msg, .tx = tx, .avail = end - off, .pos = 0, .stop = STOP_NONE };
	bpf_loop(III_SCAN_WINDOW, scan_byte, &s, 0);
	off += s.pos;
	if (s.stop == STOP_INSERT) {
		__u32 len = insert_headers(m->msg, tx, off);
		if (!len) {
			give_up(tx);
			return 1;
		}
		if (len != NOT_INSERTED) {
			m->inserted = 1;
			m->size = size + len;
			off += len;
		}
	}
	m->off = off;
	return 0;
}

SEC("sk_msg")
int iii_http_inject(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct iii_tx *tx = bpf_sk_storage_get(&iii_txs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!tx || tx->phase >= TX_OPAQUE)
		return SK_PASS;
	/* Only where the capture's send hook runs too (resync): a process of a traced cgroup, not of a
	 * subdirectory of one (sock_ops programs apply to those as well). */
	__u64 cgroup = bpf_get_current_cgroup_id();
	if (!bpf_map_lookup_elem(&iii_cgroups, &cgroup)) {
		tx->phase = TX_OPAQUE;
		return SK_PASS;
	}
	tx->processed += msg->size;
	struct message m = { .msg = msg, .tx = tx, .size = msg->size, .off = 0, .inserted = 0 };
	bpf_loop(III_SCAN_ROUNDS, one_round, &m, 0);
	if (m.off < m.size)
		give_up(tx); /* more pieces in one message than rounds: framing lost */
	/* A message with an insertion is in several pieces: made linear again when small, else TCP waits
	 * for more (Nagle) before sending its tail (~40 ms per request, measured). */
	if (m.inserted && m.size <= III_SCAN_WINDOW * 4)
		bpf_msg_pull_data(msg, 0, m.size, 0);
	return SK_PASS;
}

SEC("sockops")
int iii_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
		return 1;
	if (skops->family != AF_INET && skops->family != AF_INET6)
		return 1;
	__u64 key = bpf_get_socket_cookie(skops);
	bpf_sock_hash_update(skops, &iii_sockhash, &key, BPF_NOEXIST);
	return 1;
}

/* ---------------------------------------------------------------------------------------------
 * The capture's side: inbound requests (server ids) and the reports of both.
 */

static __always_inline void report(const struct iii_event_header *data_header, __u8 role,
				   const struct iii_context *context)
{
	struct iii_trace_event *event = bpf_ringbuf_reserve(&iii_events, sizeof(*event), 0);
	if (!event) {
		struct iii_event_header header = *data_header;
		header.kind = III_EVENT_TRACE;
		record_loss(&header, 0);
		return;
	}
	event->header = *data_header;
	event->header.kind = III_EVENT_TRACE;
	event->header.direction = 0;
	event->role = role;
	event->has_parent = context->has_parent;
	__builtin_memset(event->reserved, 0, sizeof(event->reserved));
	__builtin_memset(event->reserved2, 0, sizeof(event->reserved2));
	__builtin_memcpy(event->trace_id, context->trace_id, 32);
	__builtin_memcpy(event->span_id, context->span_id, 16);
	__builtin_memcpy(event->parent_id, context->parent_id, 16);
	event->flags[0] = context->flags[0];
	event->flags[1] = context->flags[1];
	bpf_ringbuf_submit(event, wakeup_flag(sizeof(*event), true));
}

/*
 * After a send the socket could not take whole (the rest of the message freed), the kernel skips
 * the sk_msg program for the first piece of the next send (its verdict is still "pass": measured
 * with 50 MB bodies to a slow reader). So the framing counts what it saw against what the sends
 * accepted (`ret`, the syscall's result) and corrects a body's remaining bytes by the difference;
 * a difference anywhere else means bytes it could not see: it leaves the connection alone.
 */
static __always_inline void resync(struct iii_tx *tx, long accepted)
{
	__s64 delta = (__s64)accepted - (__s64)tx->processed;
	tx->processed = 0;
	if (delta == 0 || tx->phase >= TX_OPAQUE)
		return;
	if ((tx->phase == TX_BODY || tx->phase == TX_CHUNK_DATA) &&
	    (delta < 0 || tx->remaining >= (__u64)delta)) {
		/* Typically the bytes of the skipped piece were counted as still to come: the body ends
		 * exactly here. */
		tx->remaining -= delta;
		if (!tx->remaining)
			tx->phase = tx->phase == TX_BODY ? TX_START : TX_CHUNK_END;
		return;
	}
	give_up(tx);
}

/* The client ids the sk_msg program inserted during this send, reported before its data record. */
static __always_inline void report_injected(struct sock *sk, const struct iii_event_header *header,
					    long accepted)
{
	struct iii_tx *tx = bpf_sk_storage_get(&iii_txs, sk, 0, 0);
	if (!tx)
		return;
	resync(tx, accepted);
	__u8 pending = tx->pending;
	for (int i = 0; i < III_MAX_PENDING && i < pending; i++)
		report(header, III_TRACE_CLIENT, &tx->injected[i]);
	tx->pending = 0;
}

/* Finding a valid traceparent in an inbound head (bpf_loop's callback over the captured bytes). */
struct inbound_scan {
	__u8 *payload;
	__u32 len;
	__u32 found; /* offset of the value + 1, 0 while not found */
};

static __always_inline bool header_name_at(const __u8 *p, const char *name, int n)
{
#pragma unroll
	for (int i = 0; i < 12; i++) {
		if (i >= n)
			break;
		if (lower(p[i]) != name[i])
			return false;
	}
	return true;
}

static long find_traceparent(__u64 index, struct inbound_scan *s)
{
	/* `index` is a line's LF when the header starts right after it. */
	if (index >= III_MAX_PAYLOAD - 12 - 55 - 1 || index + 1 + 12 + 55 > s->len)
		return 1;
	__u8 *p = s->payload + index;
	if (p[0] != '\n')
		return 0;
	if (p[1] == '\r' || p[1] == '\n')
		return 1; /* the blank line: end of the head */
	if (!header_name_at(p + 1, "traceparent:", 12))
		return 0;
	s->found = index + 1 + 12 + 1;
	return 1;
}

static __always_inline bool parse_hex(const __u8 *p, char *out, int n)
{
	bool nonzero = false;
#pragma unroll
	for (int i = 0; i < 32; i++) {
		if (i >= n)
			break;
		char c = p[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return false;
		nonzero |= c != '0';
		out[i] = c;
	}
	return nonzero;
}

/* The parent a valid `traceparent` (version 00) in the head names, W3C's rules as user space
 * applies them (TraceContext.parseTraceParent). */
static __always_inline bool inbound_parent(__u8 *payload, __u32 len, struct iii_context *context)
{
	struct inbound_scan s = { .payload = payload, .len = len, .found = 0 };
	bpf_loop(III_MAX_PAYLOAD, find_traceparent, &s, 0);
	if (!s.found)
		return false;
	__u32 at = s.found - 1;
	/* Optional whitespace before the value. */
	if (at < III_MAX_PAYLOAD && (payload[at] == ' ' || payload[at] == '\t'))
		at++;
	if (at >= III_MAX_PAYLOAD || at + 55 > len)
		return false;
	/* Spelled out for the verifier (the compiler merges the checks above into one it cannot use). */
	asm volatile("%0 &= 8191" : "+r"(at));
	__u8 *v = payload + at;
	char flags[2];
	if (v[0] != '0' || v[1] != '0' || v[2] != '-' || v[35] != '-' || v[52] != '-')
		return false;
	if (!parse_hex(v + 3, context->trace_id, 32) || !parse_hex(v + 36, context->parent_id, 16))
		return false;
	parse_hex(v + 53, flags, 2);
	if (hex_value(flags[0]) < 0 || hex_value(flags[1]) < 0)
		return false;
	if (at + 55 < len && v[55] != '\r' && v[55] != '\n' && v[55] != ' ' && v[55] != '\t')
		return false;
	/* Propagate the sampled flag as it came, the other bits are not ours to keep. */
	context->flags[0] = '0';
	context->flags[1] = (hex_value(flags[1]) & 1) ? '1' : '0';
	context->has_parent = 1;
	return true;
}

static __always_inline bool starts_with_method(const __u8 *p, __u32 len)
{
	if (len < 8)
		return false;
	__u32 word = p[0] | p[1] << 8 | p[2] << 16 | (__u32)p[3] << 24;
	switch (word) {
	case 0x20544547: /* "GET " */
	case 0x54534f50: /* "POST" */
	case 0x20545550: /* "PUT " */
	case 0x454c4544: /* "DELE" */
	case 0x44414548: /* "HEAD" */
	case 0x43544150: /* "PATC" */
	case 0x4954504f: /* "OPTI" */
		return true;
	default:
		return false;
	}
}

/* A traced thread read or wrote `copied` bytes (in the scratch payload) on a socket: an inbound
 * request begins the thread's serving of it (reported as its server ids), a response ends it. */
static __always_inline void propagation_data(struct sock *sk, const struct iii_event_header *header,
					     __u8 *payload, __u32 copied, bool egress, long ret)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	if (egress) {
		report_injected(sk, header, ret);
		/* "HTTP/1.x NNN": a final response (not 1xx) ends what the thread served. */
		if (copied > 12 && payload[0] == 'H' && payload[1] == 'T' && payload[2] == 'T' &&
		    payload[3] == 'P' && payload[4] == '/' && payload[9] != '1') {
			struct iii_serving *serving = bpf_map_lookup_elem(&iii_serving, &pid_tgid);
			if (serving && serving->in_flight > 0)
				serving->in_flight--;
		}
		return;
	}
	if (!starts_with_method(payload, copied))
		return;
	struct iii_serving next = {};
	if (!inbound_parent(payload, copied, &next.context)) {
		new_trace_id(next.context.trace_id);
		no_parent(&next.context);
		next.context.flags[0] = '0';
		next.context.flags[1] = '1';
	}
	random_hex(next.context.span_id, 16);
	struct iii_serving *serving = bpf_map_lookup_elem(&iii_serving, &pid_tgid);
	next.in_flight = serving ? serving->in_flight + 1 : 1;
	bpf_map_update_elem(&iii_serving, &pid_tgid, &next, BPF_ANY);
	report(header, III_TRACE_SERVER, &next.context);
}
