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
