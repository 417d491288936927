/** Every error @iii/agent can fail with (none crosses the wire, so all are `Data.TaggedError`). */
import { Data } from "effect"

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
