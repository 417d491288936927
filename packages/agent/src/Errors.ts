/** Every error @iii/agent can fail with (none crosses the wire, so all are `Data.TaggedError`). */
import * as Data from "effect/Data"

/** The proxy could not start (address in use, bad address). */
export class ProxyError extends Data.TaggedError("ProxyError")<{ readonly message: string }> {}

/** The requested capture mode cannot run here; `reason` says what is missing. */
export class ModeUnavailable extends Data.TaggedError("ModeUnavailable")<{
  readonly mode: "ebpf" | "proxy"
  readonly reason: string
}> {
  override get message() {
    return `${this.mode} mode is not available: ${this.reason}`
  }
}

/** The agent's configuration is incomplete or contradictory. */
export class AgentConfigError extends Data.TaggedError("AgentConfigError")<{ readonly message: string }> {}

/** The traced command could not be started. */
export class CommandError extends Data.TaggedError("CommandError")<{ readonly message: string }> {}

/** eBPF capture cannot run here: no Linux, no kernel BTF, or the native addon is not built. */
export class EbpfUnavailable extends Data.TaggedError("EbpfUnavailable")<{ readonly reason: string }> {
  override get message() {
    return `eBPF capture is not available: ${this.reason}`
  }
}

/** Loading or attaching eBPF programs was refused; `missing` names the capabilities to grant. */
export class EbpfPermissionDenied extends Data.TaggedError("EbpfPermissionDenied")<{
  readonly message: string
  readonly missing: ReadonlyArray<string>
}> {}

/** The syscall tracepoints are not reachable: tracefs is not mounted and could not be mounted. */
export class TracefsUnavailable extends Data.TaggedError("TracefsUnavailable")<{
  readonly message: string
}> {}

/** The kernel's verifier rejected a capture program; `log` is its verdict (for a bug report). */
export class VerifierRejected extends Data.TaggedError("VerifierRejected")<{
  readonly program: string
  readonly message: string
  readonly log: string
}> {}

/** Any other failure of the native capture (loading, attaching, map updates, bad options). */
export class EbpfCaptureError extends Data.TaggedError("EbpfCaptureError")<{
  readonly code: string
  readonly message: string
}> {}
