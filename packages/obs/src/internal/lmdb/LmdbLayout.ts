/** Opens the one LMDB environment and its named databases (names and key layouts: Keys.ts). */
import type { Telemetry } from "@iii/core"
import {
  type Database,
  type Key as LmdbKey,
  open,
  type RootDatabase,
  type RootDatabaseOptionsWithPath
} from "lmdb"
import type {
  CorrelationKey,
  DigestKey,
  DigestValue,
  LogKey,
  RedCellValue,
  RedKey,
  RedPartKey,
  RedPartValue,
  ServiceBlockKey,
  ServiceBlockValue,
  ServiceInfoValue,
  SpanKey,
  StatusBlockKey,
  StatusBlockValue,
  TimeKey
} from "./Keys.js"
import { dbNames, layoutVersion, plannedDbs } from "./Keys.js"
import type { TraceFilter } from "./TraceFilter.js"

// lmdb types keys as its own `Key` union; our tuples are readonly arrays of strings and numbers.
// biome-ignore lint/suspicious/noExplicitAny: lmdb's Key type does not accept readonly tuples
type K<T> = T & any

export interface Layout {
  readonly env: RootDatabase
  /** Values are `SpanRecord` bytes. */
  readonly spans: Database<Uint8Array, K<SpanKey>>
  /** Binary keys (Keys.ts, `traceIndexGroupKey`), values a group of entries (`indexEntries`). */
  readonly traceIndex: Database<Uint8Array, Uint8Array>
  /** Binary keys (an epoch's `epochStart`), Bloom filters as TraceFilter.ts encodes them. */
  readonly traceFilters: Database<Uint8Array, Uint8Array>
  /** The filters this thread has read, by epoch (sealed epochs' filters do not change). */
  readonly traceFilterCache: Map<number, TraceFilter>
  readonly byService: Database<ServiceBlockValue, K<ServiceBlockKey>>
  readonly byStatus: Database<StatusBlockValue, K<StatusBlockKey>>
  readonly byCorrelation: Database<1, K<CorrelationKey>>
  readonly red: Database<RedCellValue, K<RedKey>>
  readonly logs: Database<Telemetry.LogRecord, K<LogKey>>
  readonly logsByTime: Database<string, K<TimeKey>>
  readonly metrics: Database<Telemetry.MetricPoint, K<TimeKey>>
  readonly redParts: Database<RedPartValue, K<RedPartKey>>
  readonly services: Database<ServiceInfoValue, string>
  readonly digests: Database<DigestValue, K<DigestKey>>
  /** Values are a write for the target node, as the cluster encodes it. */
  readonly hints: Database<Uint8Array, K<readonly [target: string, hint: number]>>
  readonly meta: Database<unknown, string>
  /**
   * The databases a `WritePlan` fills, in `plannedDbs` order, opened for already-encoded keys and
   * values (the same databases as above, whose handles encode keys and decode values).
   */
  readonly planned: ReadonlyArray<Database<Uint8Array, Uint8Array>>
}

/** Key under which a record database keeps its shared msgpack structures (one extra entry). */
export const structuresKey = Symbol.for("structures")

export interface OpenOptions {
  readonly path: string
  /** Initial map size in bytes; lmdb-js grows it on demand. */
  readonly mapSize?: number
}

/** Opens (creating if needed) the environment; throws the foreign lmdb error, which the caller wraps. */
export const openLayout = (options: OpenOptions): Layout => {
  // lmdb-js takes `noReadAhead` (its README) though its types omit it.
  const settings: RootDatabaseOptionsWithPath & { readonly noReadAhead: boolean } = {
    path: options.path,
    maxDbs: 16,
    mapSize: options.mapSize ?? 1024 * 1024 * 1024,
    // Durable commits (the default): a write's promise resolves after commit; we await `flushed` too.
    noSync: false,
    // The path is always a directory, even when its name has a dot (lmdb would take it for a file).
    noSubdir: false,
    // No read-around on a page fault (MADV_RANDOM): reads here are B-tree descents to random pages, and
    // a fault otherwise reads the device's whole readahead window around the page (8 MB on the
    // development VM): cold trace lookups waited 10–40 ms on such faults (obs README, "Storage").
    noReadAhead: true
  }
  const env = open(settings)
  const db = <V, Key extends LmdbKey>(name: string, records = false) =>
    env.openDB<V, Key>({
      name,
      encoding: "msgpack",
      keyEncoding: "ordered-binary",
      cache: false,
      // Record databases keep msgpack record structures in the db (under `structuresKey`), so each value
      // is encoded without repeating its field names.
      ...(records && { sharedStructuresKey: structuresKey })
    })
  const binary = (name: string) =>
    env.openDB<Uint8Array, Uint8Array>({ name, encoding: "binary", keyEncoding: "binary", cache: false })
  // The planned handles of ordered-binary databases keep that key encoding (lmdb gives those databases
  // a comparator of its own, which a handle with binary keys must not miss); a Uint8Array key is
  // written as its bytes.
  const encoded = (name: string) =>
    name === dbNames.traceIndex
      ? binary(name)
      : env.openDB<Uint8Array, Uint8Array>({
          name,
          encoding: "binary",
          keyEncoding: "ordered-binary",
          cache: false
        })
  const layout: Layout = {
    env,
    spans: env.openDB<Uint8Array, K<SpanKey>>({
      name: dbNames.spans,
      encoding: "binary",
      keyEncoding: "ordered-binary",
      cache: false
    }),
    traceIndex: binary(dbNames.traceIndex),
    traceFilters: binary(dbNames.traceFilters),
    traceFilterCache: new Map(),
    byService: db(dbNames.byService),
    byStatus: db(dbNames.byStatus),
    byCorrelation: db(dbNames.byCorrelation),
    red: db(dbNames.red),
    logs: db(dbNames.logs, true),
    logsByTime: db(dbNames.logsByTime),
    metrics: db(dbNames.metrics, true),
    redParts: db(dbNames.redParts),
    services: db(dbNames.services),
    digests: db(dbNames.digests),
    hints: env.openDB<Uint8Array, K<readonly [string, number]>>({
      name: dbNames.hints,
      encoding: "binary",
      keyEncoding: "ordered-binary",
      cache: false
    }),
    meta: db(dbNames.meta),
    planned: plannedDbs.map((name) => encoded(dbNames[name]))
  }
  const found = layout.meta.get("layout")
  if (found === undefined) layout.meta.putSync("layout", layoutVersion)
  else if (found !== layoutVersion)
    throw new Error(`data directory has layout version ${found}; this build reads version ${layoutVersion}`)
  return layout
}
