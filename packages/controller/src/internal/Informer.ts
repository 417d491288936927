/**
 * List+watch of one resource type into an in-memory cache, the way client-go's reflector does it:
 * list (paginated), then watch from the list's resourceVersion with bookmarks; on `410 Gone` relist
 * once; on any other failure re-watch after an exponential backoff (never a tight loop).
 * Every change calls `onChange` with the object; callers only enqueue keys there.
 */
import { Duration, Effect, type Scope } from "effect"
import type { KubeApiError } from "../Errors.js"
import {
  apiVersionOf,
  KubeClient,
  type KubeObject,
  type ObjectList,
  pathOf,
  type Resource,
  type WatchEvent
} from "../KubeClient.js"

export interface InformerOptions {
  readonly resource: Resource
  /** Watch one namespace; all when undefined. */
  readonly namespace?: string
  readonly labelSelector?: string
  /** Secondary index, e.g. owning composition key; `byIndex` looks objects up by it. */
  readonly indexBy?: (object: KubeObject) => string | undefined
  /** Applied to every object before it is cached, e.g. to drop fields nobody reads (managedFields). */
  readonly transform?: (object: KubeObject) => KubeObject
  /** Called for every add/update/delete; must only enqueue. */
  readonly onChange: (object: KubeObject) => void
  /** Backoff after a failed watch: doubles from `initial` to `max`. Defaults 200 ms and 30 s. */
  readonly backoff?: { readonly initial: Duration.Duration; readonly max: Duration.Duration }
  /** Server-side timeout of one watch request. Default 5 minutes. */
  readonly watchTimeoutSeconds?: number
}

export interface Informer {
  readonly get: (namespace: string | undefined, name: string) => KubeObject | undefined
  readonly list: () => IterableIterator<KubeObject>
  readonly byIndex: (value: string) => ReadonlyArray<KubeObject>
  /** Records an object the controller itself just wrote, so a reconcile right after sees it. */
  readonly upsert: (object: KubeObject) => void
  /** Drops an object the controller itself just deleted. */
  readonly forget: (namespace: string | undefined, name: string) => void
  /** Completes once the first list is in the cache. */
  readonly synced: Effect.Effect<void>
  /** Relists so far (after 410 Gone), for tests and metrics. */
  readonly relists: () => number
}

export const objectKey = (namespace: string | undefined, name: string) =>
  namespace === undefined || namespace === "" ? name : `${namespace}/${name}`

const keyOf = (o: KubeObject) => objectKey(o.metadata?.namespace, o.metadata?.name ?? "")

const rv = (o: KubeObject | undefined) => {
  const v = o?.metadata?.resourceVersion
  return v === undefined || !/^\d+$/.test(v) ? undefined : BigInt(v)
}

/** Whether `incoming` is not older than `current` (resourceVersions compare as integers when they are). */
const notOlder = (incoming: KubeObject, current: KubeObject | undefined) => {
  const a = rv(incoming)
  const b = rv(current)
  return a === undefined || b === undefined || a >= b
}

class Gone {
  readonly _tag = "Gone"
}

export const make = (options: InformerOptions): Effect.Effect<Informer, never, KubeClient | Scope.Scope> =>
  Effect.gen(function* () {
    const client = yield* KubeClient
    const cache = new Map<string, KubeObject>()
    const index = new Map<string, Set<string>>()
    let relists = 0
    const synced = yield* Effect.makeLatch(false)
    const collection = pathOf(options.resource, options.namespace)
    const baseQuery = { labelSelector: options.labelSelector }
    const initialBackoff = options.backoff?.initial ?? Duration.millis(200)
    const maxBackoff = options.backoff?.max ?? Duration.seconds(30)

    const unindex = (key: string, o: KubeObject | undefined) => {
      const value = o === undefined ? undefined : options.indexBy?.(o)
      if (value !== undefined) index.get(value)?.delete(key)
    }
    const transform = options.transform ?? ((o: KubeObject) => o)
    const put = (incoming: KubeObject) => {
      const o = transform(incoming)
      const key = keyOf(o)
      unindex(key, cache.get(key))
      cache.set(key, o)
      const value = options.indexBy?.(o)
      if (value !== undefined) {
        const set = index.get(value) ?? new Set<string>()
        index.set(value, set)
        set.add(key)
      }
    }
    const drop = (key: string) => {
      unindex(key, cache.get(key))
      cache.delete(key)
    }

    const list = Effect.gen(function* () {
      const seen = new Set<string>()
      let resourceVersion = ""
      let continueToken: string | undefined
      do {
        const page: ObjectList = yield* client.request<ObjectList>({
          method: "GET",
          path: collection,
          query: { ...baseQuery, limit: "500", continue: continueToken }
        })
        for (const item of page.items) {
          // List items carry no apiVersion/kind; add them so cached objects are self-describing.
          const o = { apiVersion: apiVersionOf(options.resource), kind: options.resource.kind, ...item }
          seen.add(keyOf(o))
          put(o)
          options.onChange(o)
        }
        resourceVersion = page.metadata?.resourceVersion ?? resourceVersion
        continueToken = page.metadata?.continue || undefined
      } while (continueToken !== undefined)
      for (const [key, o] of cache) {
        if (!seen.has(key)) {
          drop(key)
          options.onChange(o)
        }
      }
      yield* synced.open
      return resourceVersion
    })

    const handle = (event: WatchEvent, state: { resourceVersion: string }) => {
      const o = event.object
      if (event.type === "ERROR") {
        const code = (o as { code?: number }).code
        return code === 410 ? new Gone() : undefined
      }
      state.resourceVersion = o.metadata?.resourceVersion ?? state.resourceVersion
      if (event.type === "BOOKMARK") return undefined
      if (event.type === "DELETED") drop(keyOf(o))
      else if (notOlder(o, cache.get(keyOf(o)))) put(o)
      options.onChange(o)
      return undefined
    }

    // One watch request; ends when the server closes it, "gone" on 410.
    const watchOnce = (state: { resourceVersion: string }) =>
      Effect.suspend(() => {
        let gone = false
        return client
          .watch(
            collection,
            {
              ...baseQuery,
              resourceVersion: state.resourceVersion,
              allowWatchBookmarks: "true",
              timeoutSeconds: String(options.watchTimeoutSeconds ?? 300)
            },
            (event) => {
              if (handle(event, state) instanceof Gone) {
                gone = true
                return "stop"
              }
              return undefined
            }
          )
          .pipe(
            Effect.map(() => (gone ? ("gone" as const) : ("closed" as const))),
            Effect.catchIf(
              (e: KubeApiError) => e.status === 410,
              () => Effect.succeed("gone" as const)
            )
          )
      })

    const run = Effect.gen(function* () {
      const state = { resourceVersion: "" }
      let delay = initialBackoff
      let needList = true
      while (true) {
        const result = yield* Effect.either(
          Effect.gen(function* () {
            if (needList) {
              state.resourceVersion = yield* list
              needList = false
            }
            return yield* watchOnce(state)
          })
        )
        if (result._tag === "Right") {
          delay = initialBackoff
          if (result.right === "gone") {
            relists++
            needList = true
          }
          continue
        }
        yield* Effect.logWarning(
          `watch ${collection} failed: ${result.left.message}; retrying in ${Duration.format(delay)}`
        )
        yield* Effect.sleep(delay)
        delay = Duration.min(Duration.times(delay, 2), maxBackoff)
      }
    })
    yield* Effect.forkScoped(run)

    return {
      get: (namespace, name) => cache.get(objectKey(namespace, name)),
      list: () => cache.values(),
      byIndex: (value) => {
        const keys = index.get(value)
        if (keys === undefined) return []
        const out: Array<KubeObject> = []
        for (const key of keys) {
          const o = cache.get(key)
          if (o !== undefined) out.push(o)
        }
        return out
      },
      upsert: (o) => {
        if (notOlder(o, cache.get(keyOf(o)))) put(o)
      },
      forget: (namespace, name) => drop(objectKey(namespace, name)),
      synced: synced.await,
      relists: () => relists
    } satisfies Informer
  })
