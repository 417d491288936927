/**
 * What the kernel-side capture (bpf/iii_capture.bpf.c, read by the native addon) reports, decoded.
 * EbpfCapture hands these out in batches; EventProcessor turns them into spans, metrics and logs.
 *
 * - `target` is the number the process is traced as (the pids and cgroups given at start: 1; a node
 *   agent gives each container its own, see `EbpfCapture.addCgroup`): which identity its telemetry
 *   carries.
 * - Times are unix nanoseconds (the kernel's monotonic clock shifted by the realtime offset the
 *   addon measures for every batch).
 * - `pid` is the process id (tgid), `tid` the thread id: the kernel's numbers, or with
 *   `EbpfCapture` option `pidNamespace: "own"` (or `traceAllInPidNamespace`) the numbers of the
 *   capturing process's pid namespace, the ones its /proc shows.
 * - Addresses are text (`127.0.0.1`, `::1`). IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`, what a
 *   dual-stack listener on `::` sees for IPv4 clients) are reported as family 4 with the IPv4
 *   address, since that is the peer that actually connected.
 * - Data events exist only for stream sockets, and for writes to fds 1/2 (stdout/stderr: the log
 *   capture, when on). Only successful transfers are reported; `totalLength` is what the syscall moved,
 *   `payload` its first bytes (at most the configured payload size, 4 KiB by default).
 *
 * @since 0.1.0
 */

/** @since 0.1.0 */
export type Direction = "ingress" | "egress"

/** The syscalls that produce events (names as in `man 2`). @since 0.1.0 */
export type Syscall =
  | "read"
  | "write"
  | "readv"
  | "writev"
  | "recvfrom"
  | "sendto"
  | "recvmsg"
  | "sendmsg"
  /** Bytes sent straight from a file: `payload` is empty, `totalLength` says how many. */
  | "sendfile"
  /** Socket I/O of another syscall (io_uring, splice, sendmmsg/recvmmsg): `payload` is empty. */
  | "other"

/** Bytes a process read from or wrote to a socket (or wrote to stdout/stderr). @since 0.1.0 */
export interface DataEvent {
  readonly kind: "data"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
  readonly tid: number
  readonly fd: number
  readonly direction: Direction
  readonly syscall: Syscall
  /** Bytes the syscall moved (its return value). */
  readonly totalLength: number
  /**
   * The first bytes moved: `payload.byteLength <= totalLength`. A view into the batch buffer, which
   * is never reused: it stays valid, but holding it keeps the whole batch in memory (copy to keep).
   */
  readonly payload: Uint8Array
}

/**
 * A traced process used a stream socket for the first time (before its first data event): who is
 * at either end. Whether it accepted or connected the socket is for its bytes to tell (the side
 * that reads the first request is the server). Unix sockets have family 0 and no addresses.
 * @since 0.1.0
 */
export interface OpenEvent {
  readonly kind: "open"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
  readonly tid: number
  /** -1 when the syscall's fd was not known (io_uring & co.; such sockets produce nothing else). */
  readonly fd: number
  readonly family: 0 | 4 | 6
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  readonly peerAddress: string | undefined
  readonly peerPort: number | undefined
}

/** A traced TCP socket was closed (FIN sent or reset); `pid`/`fd` as its open event said. @since 0.1.0 */
export interface CloseEvent {
  readonly kind: "close"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
  readonly tid: number
  readonly fd: number
}

/**
 * A traced process forked; the child is traced from then on. With `traceAllInPidNamespace`, also a
 * process that entered the namespace from outside (a container started into it): `parentPid` 0.
 * @since 0.1.0
 */
export interface ForkEvent {
  readonly kind: "fork"
  readonly timestampNs: bigint
  readonly target: number
  readonly parentPid: number
  readonly childPid: number
}

/** A traced process exited. @since 0.1.0 */
export interface ExitEvent {
  readonly kind: "exit"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
}

/**
 * A record the kernel could not write because the ring buffer was full: which process, fd and
 * direction lost what, at the time of the lost syscall. It comes where the lost record would have
 * been in that connection's stream (before the connection's next event), so whoever reassembles the
 * stream knows where the gap is. Only failures of the ring produce these; see
 * `EbpfCapture.Counters` for losses no notice reports.
 * @since 0.1.0
 */
export interface LostEvent {
  readonly kind: "lost"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
  readonly tid: number
  /** -1 for a lost fork or exit. */
  readonly fd: number
  /** What was lost. */
  readonly lost: "data" | "open" | "close" | "fork" | "exit" | "trace"
  /** Data: the direction and the syscall; others: `undefined`. */
  readonly direction: Direction | undefined
  readonly syscall: Syscall | undefined
  /** Data: bytes the lost syscall moved; others: 0. */
  readonly totalLength: number
}

/** @since 0.1.0 */
/**
 * Trace propagation (`Options.propagation`): the W3C ids the kernel gave a request, reported just
 * before the data event of the same socket and send/receive (same pid, fd, timestamp). `server`: an
 * inbound request that data event begins (its server span's ids: a child of its own valid
 * `traceparent`, else a root); `client`: an outbound request the kernel inserted a `traceparent` into
 * (its head ends in that data event, which shows the bytes as the app wrote them, without it).
 */
export interface TraceEvent {
  readonly kind: "trace"
  readonly timestampNs: bigint
  readonly target: number
  readonly pid: number
  readonly tid: number
  readonly fd: number
  readonly role: "server" | "client"
  /** Lowercase hex, as in `traceparent`. */
  readonly traceId: string
  readonly spanId: string
  /** Undefined for a root span. */
  readonly parentSpanId: string | undefined
  /** `trace-flags` (01: sampled). */
  readonly flags: number
}

export type CaptureEvent = DataEvent | OpenEvent | CloseEvent | ForkEvent | ExitEvent | LostEvent | TraceEvent
