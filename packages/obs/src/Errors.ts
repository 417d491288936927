/**
 * Every error @iii/obs can fail with. Foreign failures (LMDB, sockets) are wrapped once, at the edge,
 * into these tagged errors.
 */

import { Errors } from "@iii/core"
import { Data } from "effect"

/** The LMDB store failed (open, read, write or commit); `cause` is the foreign error. */
export class StoreError extends Data.TaggedError("StoreError")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message() {
    return `store ${this.operation} failed: ${Errors.messageOf(this.cause)}`
  }
}

/**
 * The data directory cannot be used: it cannot be created or written, is not a directory, or holds
 * an LMDB environment this build cannot open. The node does not start.
 */
export class DataDirError extends Data.TaggedError("DataDirError")<{
  readonly path: string
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message() {
    return `data directory ${this.path}: ${this.reason}`
  }
}

/**
 * A span the wire protocol accepts but the store cannot index: its labels would make an index key
 * longer than LMDB allows. Its batch is refused as `invalid_batch` before it joins a commit, so the
 * batches it would have shared a transaction with are stored.
 */
export class UnindexableSpan extends Data.TaggedError("UnindexableSpan")<{
  readonly path: string
  readonly reason: string
}> {
  override get message() {
    return `${this.path}: ${this.reason}`
  }
}

/** A query parameter was missing or malformed; answered with HTTP 400 naming the parameter. */
export class InvalidParameter extends Data.TaggedError("InvalidParameter")<{
  readonly parameter: string
  readonly reason: string
}> {
  override get message() {
    return `invalid parameter "${this.parameter}": ${this.reason}`
  }
}

/** The node could not start listening (port taken, bad host, unreadable token file…). */
export class ServerError extends Data.TaggedError("ServerError")<{
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message() {
    return this.reason
  }
}

/** The TLS certificate or key could not be loaded at start (unreadable, not PEM, or not a pair);
 * `file` is the one at fault. */
export class TlsError extends Data.TaggedError("TlsError")<{
  readonly file: string
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message() {
    return this.reason
  }
}

/** A setting (a flag of `iii obs` or an `III_OBS_*` variable, named in `setting`) has a value the node cannot use. */
export class InvalidSetting extends Data.TaggedError("InvalidSetting")<{
  readonly setting: string
  readonly reason: string
}> {
  override get message() {
    return `${this.setting}: ${this.reason}`
  }
}

/** The cluster cannot start as configured: a data directory of another ring layout, a bad member list. */
export class ClusterError extends Data.TaggedError("ClusterError")<{
  readonly reason: string
  readonly cause?: unknown
}> {
  override get message() {
    return this.reason
  }
}
