/**
 * Every error @iii/core can fail with, each a `Data.TaggedError`. This module does not import
 * `effect/Schema` (which loads `fast-check` with it): the node agent imports it and holds its memory
 * budget by not loading Schema (packages/agent README, "Memory"); `WireProtocol` has the wire
 * error codes' schema.
 */
import * as Cause from "effect/Cause"
import * as Data from "effect/Data"

/** The text of anything thrown: an Error's message, or the value itself as a string. */
export const messageOf = (thrown: unknown): string =>
  thrown instanceof Error ? thrown.message : String(thrown)

/** A document (YAML/JSON/object) did not match a schema; `issues` lists every problem, with its path. */
export class InvalidDocument extends Data.TaggedError("InvalidDocument")<{
  readonly source: string
  readonly issues: ReadonlyArray<{ readonly path: string; readonly message: string }>
}> {
  override get message() {
    return `${this.source}: ${this.issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`
  }
}

/**
 * Why a wire frame was refused (see `WireProtocol`). The codec produces `malformed`, `truncated`,
 * `oversize`, `unsupported_version` and `invalid_batch`; obs and the agent use the rest.
 */
export const wireErrorCodes = [
  "malformed",
  "truncated",
  "oversize",
  "unsupported_version",
  "unauthorized",
  "invalid_batch",
  "protocol",
  "overloaded",
  "internal"
] as const
export type WireErrorCode = (typeof wireErrorCodes)[number]

/**
 * A frame could not be accepted. `message` names the offending path (`spans[3].traceId: ...`);
 * `seq` is the batch's sequence number when it could be read, so the peer knows which batch failed.
 */
export class WireError extends Data.TaggedError("WireError")<{
  readonly code: WireErrorCode
  readonly message: string
  readonly seq?: number
}> {}

/** Sketch data (from the wire or disk) that no `LatencySketch` could have produced. */
export class InvalidSketch extends Data.TaggedError("InvalidSketch")<{ readonly reason: string }> {
  override get message() {
    return `invalid latency sketch: ${this.reason}`
  }
}

/** A message was sent to an actor that has stopped (or was given up on): it was not delivered. */
export class ActorStopped extends Data.TaggedError("ActorStopped")<{ readonly actor: string }> {
  override get message() {
    return `actor ${this.actor} is stopped`
  }
}

/**
 * An actor failed and will not be restarted: its restart budget was exhausted after `restarts`
 * restarts (0 for an actor without supervision). `lastFailure` is the cause of the final failure.
 */
export class ActorFailed extends Data.TaggedError("ActorFailed")<{
  readonly actor: string
  readonly restarts: number
  readonly lastFailure: Cause.Cause<unknown>
}> {
  override get message() {
    return `actor ${this.actor} failed after ${this.restarts} restart(s) and was given up: ${Cause.pretty(this.lastFailure)}`
  }
}

/** The supervisor's scope has closed: it starts no more actors. */
export class SupervisorClosed extends Data.TaggedError("SupervisorClosed")<{ readonly actor: string }> {
  override get message() {
    return `cannot start actor ${this.actor}: its supervisor is closed`
  }
}
