/**
 * Kernel-side traffic capture as an Effect resource: `start` loads and attaches the eBPF programs
 * (through the native addon), `batches` streams decoded CaptureEvents, closing the scope detaches.
 *
 * Only traced processes produce events: the `pids` given (and every process they fork from then on)
 * plus every process in the given cgroup v2 directories. Nothing is captured for anything else.
 * Pids are the kernel's unless `pidNamespace: "own"` (an agent sidecar, which sees the pod's
 * processes under its own pid namespace's numbers); `traceAllInPidNamespace` traces every process
 * of that namespace except the agent's own.
 *
 * Memory is fixed whatever the load: the kernel ring buffer (`ringBufferBytes`; when full the kernel
 * drops and counts) and `batchBuffers` buffers of `batchBytes` that this module lends the addon's
 * reader thread, which writes batches into them; each comes back once the consumer has moved on to
 * the next batch. When every buffer is out, records wait in the ring. Nothing is allocated per
 * batch, so the garbage collector plays no part in how much memory a backlog takes.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type { CaptureEvent } from "./CaptureEvent.js"
import {
  EbpfCaptureError,
  EbpfPermissionDenied,
  EbpfUnavailable,
  TracefsUnavailable,
  VerifierRejected
} from "./Errors.js"
import { batchLength, eventsOf } from "./internal/EventDecoder.js"
import { DEFAULT_PAYLOAD, MAX_PAYLOAD } from "./internal/EventLayout.js"
import * as NativeAddon from "./internal/NativeAddon.js"
import {
  checkProcMatches,
  listProcesses,
  ownNamespaceFile,
  rescanChanges,
  targetsExcept
} from "./internal/PidNamespace.js"

/** @since 0.1.0 */
export interface Options {
  /** Processes to trace from the start (their children are traced too). */
  readonly pids?: ReadonlyArray<number>
  /** cgroup v2 directories whose processes are traced (e.g. a pod's cgroup). */
  readonly cgroups?: ReadonlyArray<string>
  /** Allow `addCgroup` later. Default: true when `cgroups` is non-empty (the check costs a lookup per syscall). */
  readonly enableCgroups?: boolean
  /** Payload bytes captured per read/write. Default 4096 (`DEFAULT_PAYLOAD`), at most 8192. */
  readonly payloadBytes?: number
  /** Kernel ring buffer size in bytes, a power of two. Default 8 MiB. */
  readonly ringBufferBytes?: number
  /**
   * The reader drains the ring at least this often. Default 250 ms: under load the programs wake it
   * sooner (`wakeupBytes`); at low rates a longer timer means fewer, larger hand-overs (telemetry
   * waits for the exporter's 1 s batches anyway). Each hand-over costs the agent a fixed amount of
   * JavaScript (the batch's trip through the consumer's stream) besides its events: 250 ms and
   * 256 KiB hand over ~5 batches/s at 2,000 req/s instead of ~17 (100 ms, 64 KiB), 11% less agent
   * CPU per request (packages/agent README, "Tests and benchmarks").
   */
  readonly pollIntervalMs?: number
  /**
   * The programs wake the reader early once this many bytes are pending. Default 256 KiB (a
   * 32nd of the default ring: the reader has the rest to catch up in).
   */
  readonly wakeupBytes?: number
  /** Buffers batches are written into (how many batches can wait for the consumer). Default 8. */
  readonly batchBuffers?: number
  /** Size of each of them, at least 64 KiB. Default 1 MiB. */
  readonly batchBytes?: number
  /** A BPF object to load instead of the one embedded in the addon. */
  readonly objectPath?: string
  /** Mount tracefs at /sys/kernel/tracing when it is not mounted. Default true. */
  readonly mountTracefs?: boolean
  /**
   * Whose pid numbers `pids`, `addPid`, `removePid` and the events' `pid`/`tid` (and fork's
   * `childPid`) are. Default: the kernel's (the initial pid namespace; an agent in a container then
   * needs `hostPID`). `"own"`: this process's pid namespace, the numbers its /proc shows (a sidecar in
   * a pod with `shareProcessNamespace: true`); processes outside that namespace are never traced,
   * whatever `pids` or `cgroups` say.
   */
  readonly pidNamespace?: "own"
  /**
   * Trace every process of this process's pid namespace except this process and its descendants
   * (implies `pidNamespace: "own"`; needs /proc mounted for that namespace): those in /proc at start,
   * from birth their future children and every process forked into the namespace from outside (an
   * app container restarted into the pod's shared namespace), and, as a safety net, whatever a
   * rescan of /proc every `rescanIntervalMs` finds untraced. Default false.
   */
  readonly traceAllInPidNamespace?: boolean
  /** How often `traceAllInPidNamespace` rescans /proc. Default 2000 ms (one small file read per process). */
  readonly rescanIntervalMs?: number
  /**
   * What traced processes write to fds 1 and 2 (their log lines): `syscalls` (default), whatever
   * these are, through the write syscalls' tracepoints — which put every syscall on the host on the
   * kernel's slow path; `sockets`, only when they are sockets, through the socket hooks (a command
   * started with `stdio: "pipe"`: Node's pipes are socketpairs), at no cost to anything else; `off`
   * (a node agent reads the kubelet's log files).
   */
  readonly stdio?: "syscalls" | "sockets" | "off"
  /**
   * Trace processes by pid (`pids`, `addPid`, and their children). Default true; a node agent, which
   * traces cgroups only, turns it off and spares every socket operation on the host a lookup.
   */
  readonly pidTargets?: boolean
  /**
   * Trace propagation, off by default since it changes bytes on the wire: outbound HTTP/1.x requests
   * made from the `cgroups` given here (and those added with `propagate`), over TCP connections
   * established after that, get a `traceparent` (and `x-iii-correlation-id` when absent) inserted by
   * the kernel unless they carry one; every traced process's inbound requests get their server ids
   * from the kernel, reported as `trace` events (see `TraceEvent`). Needs cgroup v2 and a kernel with
   * sock_ops, sk_msg and bpf_loop (5.17+), and CAP_NET_ADMIN besides CAP_BPF + CAP_PERFMON (the
   * capture without it loads an object that has no socket map). README "Trace propagation".
   */
  readonly propagation?: boolean
}

/** @since 0.1.0 */
export interface Counters {
  /**
   * Records the kernel could not write because the ring buffer was full. Each comes as a `lost`
   * event in its connection's place in the stream, unless counted in `unrecorded`.
   */
  readonly dropped: number
  /** Of `dropped`, the records no `lost` event reports (the small loss ring was full as well). */
  readonly unrecorded: number
  /** `lost` events handed over. */
  readonly losses: number
  /** Records still in the rings when the capture closed before handing them over (see `drain`). */
  readonly abandoned: number
  /** Batches and records (`lost` events included) read from the rings and handed to JavaScript. */
  readonly batches: number
  readonly records: number
  /** Batches handed to the consumer whose buffers have not come back yet (at most `batchBuffers`). */
  readonly inFlight: number
  /** Records skipped as malformed (should stay 0; a layout mismatch otherwise). */
  readonly malformed: number
  /** Propagation: outbound requests the kernel gave a `traceparent`. */
  readonly injected: number
  /** Propagation: outbound requests that carried their own `traceparent` (left as they were). */
  readonly carried: number
  /**
   * Propagation: connections left alone for good because their bytes could not be framed as HTTP/1.x
   * (HTTP/2, a Transfer-Encoding other than chunked, bare LF line ends, a head over 16 KiB, …).
   */
  readonly unframed: number
  /**
   * Propagation: requests sent without a `traceparent` because their socket's send buffer had too
   * little room for the message and the header (a send the socket cannot take whole would make the
   * app send inserted bytes' worth of its own again).
   */
  readonly skipped: number
}

/** A running capture. @since 0.1.0 */
export interface EbpfCapture {
  /**
   * Batches of events, in ring order. Each decodes its events as it is iterated (a backlog never
   * becomes thousands of objects at once). A batch's buffer goes back to the reader when the next
   * batch is pulled, so a data event's `payload` is a view that is valid until then: copy what you
   * keep longer. Single consumer; ends when the capture's scope closes.
   */
  readonly batches: Stream.Stream<Iterable<CaptureEvent>>
  /**
   * Traces another process (and its future children), as `target` (default 1, the target of the
   * pids and cgroups given at start): the number its events carry.
   */
  readonly addPid: (pid: number, target?: number) => Effect.Effect<void, EbpfCaptureError>
  /** Stops tracing a process (its already-traced children stay traced). */
  readonly removePid: (pid: number) => Effect.Effect<void, EbpfCaptureError>
  /**
   * Traces every process in a cgroup v2 directory (not its subdirectories: add them too) as
   * `target` (default 1); needs `cgroups` or `enableCgroups` at start. `propagate` (needs
   * `propagation` at start): its outbound requests get a `traceparent` (see `Options.propagation`;
   * its subdirectories' too). Returns the cgroup's id.
   */
  readonly addCgroup: (
    path: string,
    target?: number,
    options?: { readonly propagate?: boolean }
  ) => Effect.Effect<number, EbpfCaptureError>
  /** Stops tracing a cgroup, by the id `addCgroup` returned (its directory may be gone already). */
  readonly removeCgroup: (id: number) => Effect.Effect<void, EbpfCaptureError>
  /** Readable to the end, after the scope closed too (the final figures). */
  readonly counters: Effect.Effect<Counters>
  /**
   * Stops capturing (the programs are detached at once) and lets `batches` deliver everything
   * already captured, then end. What the scope's close finds still undelivered is counted in
   * `abandoned`. For a clean shutdown: drain, consume `batches` to its end (with a deadline), close.
   */
  readonly drain: Effect.Effect<void>
}

/** Every way `start` can fail. @since 0.1.0 */
export type StartError =
  | EbpfUnavailable
  | EbpfPermissionDenied
  | TracefsUnavailable
  | VerifierRejected
  | EbpfCaptureError

/** The service tag, for apps that provide the capture as a layer. @since 0.1.0 */
export class Capture extends Context.Tag("@iii/agent/EbpfCapture")<Capture, EbpfCapture>() {}

export { DEFAULT_PAYLOAD, MAX_PAYLOAD }

const toStartError = (error: unknown, addon: NativeAddon.NativeAddon, propagation: boolean): StartError => {
  const { code, message } = NativeAddon.parseNativeError(error)
  switch (code) {
    case "permission":
      return new EbpfPermissionDenied({ message, missing: addon.diagnose(propagation).missingCapabilities })
    case "tracefs":
      return new TracefsUnavailable({ message })
    case "btf":
      return new EbpfUnavailable({ reason: message })
    case "verifier": {
      const newline = message.indexOf("\n")
      return new VerifierRejected({
        program: /program (\S+)/.exec(message)?.[1] ?? "unknown",
        message: newline < 0 ? message : message.slice(0, newline),
        log: newline < 0 ? "" : message.slice(newline + 1)
      })
    }
    default:
      return new EbpfCaptureError({ code, message })
  }
}

const toCaptureError = (error: unknown): EbpfCaptureError =>
  new EbpfCaptureError(NativeAddon.parseNativeError(error))

const nativeOptions = (options: Options): NativeAddon.NativeCaptureOptions => {
  const native: NativeAddon.NativeCaptureOptions = {}
  if (options.pids !== undefined) native.pids = [...options.pids]
  if (options.cgroups !== undefined) native.cgroups = [...options.cgroups]
  if (options.enableCgroups !== undefined) native.enableCgroups = options.enableCgroups
  if (options.payloadBytes !== undefined) native.payloadBytes = options.payloadBytes
  if (options.ringBufferBytes !== undefined) native.ringBufferBytes = options.ringBufferBytes
  if (options.pollIntervalMs !== undefined) native.pollIntervalMs = options.pollIntervalMs
  if (options.wakeupBytes !== undefined) native.wakeupBytes = options.wakeupBytes
  if (options.objectPath !== undefined) native.objectPath = options.objectPath
  if (options.mountTracefs !== undefined) native.mountTracefs = options.mountTracefs
  if (options.stdio !== undefined) native.stdio = options.stdio
  if (options.pidTargets !== undefined) native.pidTargets = options.pidTargets
  if (options.propagation !== undefined) native.propagation = options.propagation
  if (options.pidNamespace === "own" || options.traceAllInPidNamespace === true)
    native.pidNamespace = ownNamespaceFile
  if (options.traceAllInPidNamespace === true) native.adoptNamespaceEntrants = true
  return native
}

/**
 * `traceAllInPidNamespace`: the namespace's processes now (added to the start pids), and a rescan
 * that keeps the target map equal to them plus the explicitly given pids.
 */
const namespaceTargets = (options: Options) =>
  Effect.gen(function* () {
    const procRoot = "/proc"
    const mismatch = checkProcMatches(procRoot)
    if (mismatch !== undefined) return yield* new EbpfCaptureError({ code: "invalid", message: mismatch })
    const scan = () => targetsExcept(listProcesses(procRoot), process.pid)
    const initial = yield* Effect.try({
      try: scan,
      catch: (error) => new EbpfCaptureError({ code: "io", message: `reading ${procRoot}: ${String(error)}` })
    })
    const explicit = new Set(options.pids ?? [])
    const rescan = (native: NativeAddon.NativeCapture) => {
      let scanned = initial
      return Effect.try({
        try: () => {
          const current = scan()
          const { add, remove } = rescanChanges(scanned, current, explicit)
          for (const pid of add) native.addPid(pid)
          for (const pid of remove) native.removePid(pid)
          scanned = current
        },
        catch: toCaptureError
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logWarning(`rescanning ${procRoot} for processes to trace failed`, error)
        ),
        Effect.repeat(Schedule.spaced(`${options.rescanIntervalMs ?? 2000} millis`))
      )
    }
    return { pids: [...new Set([...explicit, ...initial])], rescan }
  })

/**
 * Loads, attaches and starts reading; the scope's close detaches everything (the kernel also
 * detaches if the process dies first).
 *
 * @since 0.1.0
 */
export const start = (options: Options = {}): Effect.Effect<EbpfCapture, StartError, Scope.Scope> =>
  Effect.gen(function* () {
    const loaded = NativeAddon.load()
    if (loaded._tag === "Missing") return yield* new EbpfUnavailable({ reason: loaded.reason })
    const addon = loaded.addon
    const buffers = Array.from({ length: options.batchBuffers ?? 8 }, () =>
      Buffer.allocUnsafeSlow(options.batchBytes ?? 1024 * 1024)
    )
    // Buffer indices, in the order the reader filled them (at most one per buffer, plus the end).
    const queue = yield* Queue.unbounded<number>()
    let malformed = 0

    const namespace = options.traceAllInPidNamespace === true ? yield* namespaceTargets(options) : undefined
    const startOptions = nativeOptions(options)
    if (namespace !== undefined) startOptions.pids = namespace.pids

    const native = yield* Effect.acquireRelease(
      Effect.try({
        // Offered from the check phase, not from the addon's callback: Node runs the callbacks of a
        // thread-safe function back to back (up to 1,000) while more are queued, and the consumer,
        // woken in between, recycles a buffer the reader refills at once. Under a backlog the event
        // loop then never reached timers or sockets (acks from obs waited seconds while unacknowledged
        // batches piled up: +40 MB of RSS at saturation, bench:agent-overhead).
        try: () =>
          addon.Capture.start(startOptions, buffers, (index) => {
            setImmediate(() => Queue.unsafeOffer(queue, index))
          }),
        catch: (error) => toStartError(error, addon, options.propagation === true)
      }),
      (native) => Effect.sync(() => native.close())
    )
    // Interrupted before the finalizer above runs (scope finalizers run in reverse).
    if (namespace !== undefined) yield* Effect.forkScoped(namespace.rescan(native))

    const counters = Effect.sync((): Counters => {
      const now = native.counters()
      return {
        dropped: now.dropped,
        unrecorded: now.unrecorded,
        losses: now.losses,
        abandoned: now.abandoned,
        batches: now.batches,
        records: now.records,
        inFlight: now.inFlight,
        malformed: malformed + now.malformed,
        injected: now.injected,
        carried: now.carried,
        unframed: now.unframed,
        skipped: now.skipped
      }
    })

    // A batch's buffer goes back to the reader when the consumer pulls the next batch: by then it
    // is done with this one (`Stream.flattenIterables` included), and the reader keeps the others.
    let lent: number | undefined
    const giveBack = () => {
      if (lent === undefined) return
      const index = lent
      lent = undefined
      try {
        native.recycle(index)
      } catch {
        // Closed: the reader is gone.
      }
    }
    // One batch at a time: a larger chunk would decode a whole backlog into event objects at once.
    const batches = Stream.fromQueue(queue, { maxChunkSize: 1 }).pipe(
      Stream.takeWhile((index) => index !== NativeAddon.endOfCapture),
      Stream.map((index): Iterable<CaptureEvent> => {
        giveBack()
        lent = index
        const buffer = buffers[index] ?? Buffer.alloc(0)
        const batch = buffer.subarray(0, batchLength(buffer))
        return {
          [Symbol.iterator]: () =>
            eventsOf(batch, (count) => {
              malformed += count
            })
        }
      })
    )

    const call = <A>(f: () => A) => Effect.try({ try: f, catch: toCaptureError })
    return {
      batches,
      addPid: (pid, target) => call(() => native.addPid(pid, target)),
      removePid: (pid) => call(() => native.removePid(pid)),
      addCgroup: (path, target, options) => call(() => native.addCgroup(path, target, options?.propagate)),
      removeCgroup: (id) => call(() => native.removeCgroup(id)),
      counters,
      drain: Effect.sync(() => {
        try {
          native.drain()
        } catch {
          // Closed already: nothing left to drain.
        }
      })
    } satisfies EbpfCapture
  })

/** `start` as a layer providing `Capture`. @since 0.1.0 */
export const layer = (options: Options = {}): Layer.Layer<Capture, StartError> =>
  Layer.scoped(Capture, start(options))

/** @since 0.1.0 */
export interface Availability {
  readonly available: boolean
  /** Why eBPF capture cannot start here, each naming what to fix (empty when available). */
  readonly reasons: ReadonlyArray<string>
  /** Things that will be handled at start but are worth saying (e.g. tracefs will be mounted). */
  readonly notes: ReadonlyArray<string>
  /** The addon file, when it loaded. */
  readonly addonPath: string | undefined
}

/**
 * Diagnoses, without loading anything into the kernel, whether `start` can work here: Linux,
 * addon built (with its BPF object), capabilities (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN),
 * kernel BTF, tracefs.
 *
 * @since 0.1.0
 */
export const isAvailable: Effect.Effect<Availability> = Effect.sync(() => {
  const loaded = NativeAddon.load()
  if (loaded._tag === "Missing")
    return { available: false, reasons: [loaded.reason], notes: [], addonPath: undefined }
  const diagnostics = loaded.addon.diagnose()
  const reasons: Array<string> = []
  const notes: Array<string> = []
  if (diagnostics.missingCapabilities.length > 0) {
    reasons.push(
      `missing ${diagnostics.missingCapabilities.join(" and ")}: run as root or grant CAP_BPF and CAP_PERFMON`
    )
  }
  if (!diagnostics.btf) reasons.push("no kernel BTF at /sys/kernel/btf/vmlinux (needs CONFIG_DEBUG_INFO_BTF)")
  if (!diagnostics.embeddedObject) {
    reasons.push(
      "the addon was built without its BPF object: run `npm run build:native` with clang and bpftool"
    )
  }
  if (!diagnostics.tracefsMounted) {
    notes.push("tracefs is not mounted: start() mounts it at /sys/kernel/tracing (needs CAP_SYS_ADMIN)")
  }
  return { available: reasons.length === 0, reasons, notes, addonPath: loaded.path }
})
