/**
 * Every error @iii/core can fail with. Errors that cross the wire are `Schema.TaggedError` with
 * structured fields; the rest are `Data.TaggedError`.
 */
import { Data, Schema } from "effect"

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
export const WireErrorCode = Schema.Literal(
  "malformed",
  "truncated",
  "oversize",
  "unsupported_version",
  "unauthorized",
  "invalid_batch",
  "protocol",
  "overloaded",
  "internal"
)
export type WireErrorCode = typeof WireErrorCode.Type

/**
 * A frame could not be accepted. `message` names the offending path (`spans[3].traceId: ...`);
 * `seq` is the batch's sequence number when it could be read, so the peer knows which batch failed.
 */
export class WireError extends Schema.TaggedError<WireError>()("WireError", {
  code: WireErrorCode,
  message: Schema.String,
  seq: Schema.optional(Schema.Number)
}) {}
