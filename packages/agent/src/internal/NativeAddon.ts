/**
 * Loads the native addon (native/, built by scripts/build-native.sh and copied into this package's
 * native/<platform>-<arch>/, which npm pack ships: README "Decisions", native addon).
 *
 * A hand-written loader rather than @napi-rs/cli's generated one: the package carries its builds in
 * one folder per platform rather than in per-platform packages, so there is one path to compute, and
 * the CLI would be a heavy dev dependency for one `require`. The types below mirror native/src/lib.rs.
 */
import { existsSync } from "node:fs"
import { createRequire } from "node:module"
import { fileURLToPath } from "node:url"
import * as Errors from "@iii/core/Errors"

export interface NativeCaptureOptions {
  pids?: Array<number>
  cgroups?: Array<string>
  enableCgroups?: boolean
  payloadBytes?: number
  ringBufferBytes?: number
  wakeupBytes?: number
  pollIntervalMs?: number
  objectPath?: string
  mountTracefs?: boolean
  /** A pid namespace file (e.g. /proc/self/ns/pid) whose numbering the programs use. */
  pidNamespace?: string
  /** With `pidNamespace`: trace processes forked into it from outside, from birth. */
  adoptNamespaceEntrants?: boolean
  /** Log lines from writes to fds 1 and 2 (see `EbpfCapture.Options.stdio`). Default `syscalls`. */
  stdio?: "off" | "sockets" | "syscalls"
  /** Trace processes by pid. Default true; off, cgroups only. */
  pidTargets?: boolean
  /** Trace propagation (see `EbpfCapture.Options.propagation`). Default false. */
  propagation?: boolean
}

export interface NativeCounters {
  dropped: number
  unrecorded: number
  losses: number
  abandoned: number
  batches: number
  records: number
  malformed: number
  injected: number
  carried: number
  unframed: number
  skipped: number
  inFlight: number
}

export interface NativeCapture {
  addPid(pid: number, target?: number): void
  removePid(pid: number): void
  /** Returns the cgroup's id (its inode number). `propagate` needs `propagation` at start. */
  addCgroup(path: string, target?: number, propagate?: boolean): number
  removeCgroup(id: number): void
  /** The batch in buffer `index` has been consumed: the reader may fill the buffer again. */
  recycle(index: number): void
  /** Counters; still answers after `close` (the final figures). */
  counters(): NativeCounters
  /** Detach the programs and hand over everything left, then the end-of-capture index. */
  drain(): void
  close(): void
}

export interface NativeStructLayout {
  name: string
  size: number
  fields: Array<{ name: string; offset: number }>
}

export interface NativeDiagnostics {
  missingCapabilities: Array<string>
  tracefsMounted: boolean
  btf: boolean
  embeddedObject: boolean
}

export interface NativeAddon {
  Capture: {
    /** `onBatch(index)`: buffer `index` holds a batch (`endOfCapture`: the capture ended). */
    start(
      options: NativeCaptureOptions,
      buffers: Array<Buffer>,
      onBatch: (index: number) => void
    ): NativeCapture
  }
  eventLayout(): Array<NativeStructLayout>
  layoutVersion(): number
  /** `propagation`: also count what trace propagation needs (CAP_NET_ADMIN). */
  diagnose(propagation?: boolean): NativeDiagnostics
}

/** The batch index that tells the capture has ended. */
export const endOfCapture = 0xffffffff

/** The folder of the package's native/ that holds the build for this machine. */
const platformKey = `${process.platform}-${process.arch}`

/** Where the addon is looked for: $III_NATIVE_ADDON, else this package's build for this platform. */
export const addonPath = (): string =>
  process.env.III_NATIVE_ADDON ??
  fileURLToPath(new URL(`../../native/${platformKey}/iii_native.node`, import.meta.url))

export type LoadResult =
  | { readonly _tag: "Loaded"; readonly addon: NativeAddon; readonly path: string }
  | { readonly _tag: "Missing"; readonly reason: string }

let cached: LoadResult | undefined

/** Loads the addon once; never throws. */
export const load = (): LoadResult => {
  if (cached !== undefined) return cached
  const path = addonPath()
  if (process.platform !== "linux") {
    cached = { _tag: "Missing", reason: `eBPF capture needs Linux (this is ${process.platform})` }
  } else if (!existsSync(path)) {
    cached = {
      _tag: "Missing",
      reason: `the native addon is not built for ${platformKey} (${path} is missing): in a checkout run \`npm run build:native\` (needs cargo, clang, bpftool); the published package carries linux-x64 only`
    }
  } else {
    try {
      const addon = createRequire(import.meta.url)(path) as NativeAddon
      cached = { _tag: "Loaded", addon, path }
    } catch (error) {
      cached = { _tag: "Missing", reason: `the native addon at ${path} failed to load: ${String(error)}` }
    }
  }
  return cached
}

/** Splits the addon's "code: message" error text. */
export const parseNativeError = (error: unknown): { readonly code: string; readonly message: string } => {
  const text = Errors.messageOf(error)
  const match = /^([a-z]+): ([\s\S]*)$/.exec(text)
  return match?.[1] !== undefined && match[2] !== undefined
    ? { code: match[1], message: match[2] }
    : { code: "unknown", message: text }
}
