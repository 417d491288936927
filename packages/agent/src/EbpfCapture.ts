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
 * Memory stays bounded at every stage: the kernel ring buffer (`ringBufferBytes`; when full the
 * kernel drops and counts), the native hand-over (8 MiB pending, then the reader pauses), and the
 * queue in front of `batches` (`maxQueuedBytes`; when full whole batches are dropped and counted).
 *
 * @since 0.1.0
 */
import { Context, Effect, Layer, Queue, Schedule, type Scope, Stream } from "effect"
import type { CaptureEvent } from "./CaptureEvent.js"
import {
  EbpfCaptureError,
  EbpfPermissionDenied,
  EbpfUnavailable,
  TracefsUnavailable,
  VerifierRejected
} from "./Errors.js"
import { decodeBatch } from "./internal/EventDecoder.js"
import { BatchHeader, DEFAULT_PAYLOAD, MAX_PAYLOAD } from "./internal/EventLayout.js"
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
  /** The reader drains the ring at least this often. Default 10 ms. */
  readonly pollIntervalMs?: number
  /** The programs wake the reader early once this many bytes are pending. Default 64 KiB. */
  readonly wakeupBytes?: number
  /** Bytes of undelivered batches kept for `batches`; beyond it batches are dropped. Default 8 MiB. */
  readonly maxQueuedBytes?: number
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
}

/** @since 0.1.0 */
export interface Counters {
  /** Records the kernel could not write because the ring buffer was full. */
  readonly dropped: number
  /** Batches and records read from the ring and handed to JavaScript. */
  readonly batches: number
  readonly records: number
  /** Records dropped in user space because `batches` fell behind by more than `maxQueuedBytes`. */
  readonly queueDropped: number
  /** Records skipped as malformed (should stay 0; a layout mismatch otherwise). */
  readonly malformed: number
}

/** A running capture. @since 0.1.0 */
export interface EbpfCapture {
  /** Decoded batches (never empty), in ring order. Single consumer; ends when the capture's scope closes. */
  readonly batches: Stream.Stream<ReadonlyArray<CaptureEvent>>
  /** Traces another process (and its future children). */
  readonly addPid: (pid: number) => Effect.Effect<void, EbpfCaptureError>
  /** Stops tracing a process (its already-traced children stay traced). */
  readonly removePid: (pid: number) => Effect.Effect<void, EbpfCaptureError>
  /** Traces every process in a cgroup v2 directory (needs `cgroups` or `enableCgroups` at start). */
  readonly addCgroup: (path: string) => Effect.Effect<void, EbpfCaptureError>
  readonly counters: Effect.Effect<Counters>
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

const toStartError = (error: unknown, addon: NativeAddon.NativeAddon): StartError => {
  const { code, message } = NativeAddon.parseNativeError(error)
  switch (code) {
    case "permission":
      return new EbpfPermissionDenied({ message, missing: addon.diagnose().missingCapabilities })
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
    const maxQueuedBytes = options.maxQueuedBytes ?? 8 * 1024 * 1024
    const queue = yield* Queue.unbounded<Uint8Array>()
    let queuedBytes = 0
    let queueDropped = 0
    let malformed = 0

    const onBatch = (batch: Buffer): void => {
      // An empty batch is the end marker and always goes through.
      if (batch.byteLength > 0 && queuedBytes + batch.byteLength > maxQueuedBytes) {
        queueDropped +=
          batch.byteLength >= BatchHeader.size ? batch.readUInt32LE(BatchHeader.fields.record_count) : 0
        return
      }
      queuedBytes += batch.byteLength
      Queue.unsafeOffer(queue, batch)
    }

    const namespace = options.traceAllInPidNamespace === true ? yield* namespaceTargets(options) : undefined
    const startOptions = nativeOptions(options)
    if (namespace !== undefined) startOptions.pids = namespace.pids

    const native = yield* Effect.acquireRelease(
      Effect.try({
        try: () => addon.Capture.start(startOptions, onBatch),
        catch: (error) => toStartError(error, addon)
      }),
      (native) => Effect.sync(() => native.close())
    )
    // Interrupted before the finalizer above runs (scope finalizers run in reverse).
    if (namespace !== undefined) yield* Effect.forkScoped(namespace.rescan(native))

    let last: NativeAddon.NativeCounters | undefined
    const counters = Effect.sync((): Counters => {
      try {
        last = native.counters()
      } catch {
        // Closed: the last reading stands.
      }
      return {
        dropped: last?.dropped ?? 0,
        batches: last?.batches ?? 0,
        records: last?.records ?? 0,
        queueDropped,
        malformed: malformed + (last?.malformed ?? 0)
      }
    })

    // One batch at a time: a larger chunk would decode a whole backlog into event objects at once.
    const batches = Stream.fromQueue(queue, { maxChunkSize: 1 }).pipe(
      Stream.takeWhile((batch) => batch.byteLength > 0),
      Stream.map((batch) => {
        queuedBytes -= batch.byteLength
        const decoded = decodeBatch(batch)
        malformed += decoded.malformed
        return decoded.events
      }),
      Stream.filter((events) => events.length > 0)
    )

    const call = (f: () => void) => Effect.try({ try: f, catch: toCaptureError })
    return {
      batches,
      addPid: (pid) => call(() => native.addPid(pid)),
      removePid: (pid) => call(() => native.removePid(pid)),
      addCgroup: (path) => call(() => native.addCgroup(path)),
      counters
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
