/**
 * A small Kubernetes REST client: JSON requests, server-side apply, and watches with callbacks, over one
 * keep-alive connection pool. Credentials come from a kubeconfig resolved the way kubectl does it
 * (`--kubeconfig`, then `KUBECONFIG`, then `~/.kube/config`, then the in-cluster service account);
 * `@kubernetes/client-node` parses it and supplies TLS material and tokens (refreshed per request).
 *
 * Every foreign failure becomes a `KubeApiError` here, once.
 */
import { existsSync, readFileSync } from "node:fs"
import * as http from "node:http"
import * as https from "node:https"
import { homedir } from "node:os"
import { join } from "node:path"
import { Errors } from "@iii/core"
import { KubeConfig } from "@kubernetes/client-node"
import { Context, Effect, Layer, Option } from "effect"
import { KubeApiError, KubeConfigError } from "./Errors.js"

/** Any Kubernetes object, as JSON. */
export interface KubeObject {
  readonly apiVersion?: string
  readonly kind?: string
  readonly metadata?: ObjectMeta
  readonly [field: string]: unknown
}

export interface OwnerReference {
  readonly apiVersion: string
  readonly kind: string
  readonly name: string
  readonly uid: string
  readonly controller?: boolean
  readonly blockOwnerDeletion?: boolean
}

export interface ObjectMeta {
  readonly name?: string
  readonly namespace?: string
  readonly uid?: string
  readonly resourceVersion?: string
  readonly generation?: number
  readonly labels?: Readonly<Record<string, string>>
  readonly annotations?: Readonly<Record<string, string>>
  readonly ownerReferences?: ReadonlyArray<OwnerReference>
  readonly deletionTimestamp?: string
  readonly managedFields?: ReadonlyArray<unknown>
}

export interface ObjectList {
  readonly metadata?: { readonly resourceVersion?: string; readonly continue?: string }
  readonly items: ReadonlyArray<KubeObject>
}

export interface WatchEvent {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR"
  readonly object: KubeObject
}

/** A resource type: where its REST path lives. */
export interface Resource {
  readonly group: string
  readonly version: string
  readonly plural: string
  readonly kind: string
  readonly namespaced: boolean
}

const resource = (apiVersion: string, kind: string, plural: string, namespaced = true): Resource => {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/", 2) : ["", apiVersion]
  return { group: group ?? "", version: version ?? apiVersion, plural, kind, namespaced }
}

/** The resource types the controller touches. */
export const resources = {
  ServiceComposition: resource("iii.io/v1", "ServiceComposition", "servicecompositions"),
  Deployment: resource("apps/v1", "Deployment", "deployments"),
  Service: resource("v1", "Service", "services"),
  Ingress: resource("networking.k8s.io/v1", "Ingress", "ingresses"),
  HorizontalPodAutoscaler: resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
  Lease: resource("coordination.k8s.io/v1", "Lease", "leases"),
  Namespace: resource("v1", "Namespace", "namespaces", false),
  Pod: resource("v1", "Pod", "pods")
} as const

export const apiVersionOf = (r: Resource) => (r.group === "" ? r.version : `${r.group}/${r.version}`)

/** REST path of a collection (no name) or an object, optionally a subresource (`status`, `scale`). */
export const pathOf = (r: Resource, namespace?: string, name?: string, subresource?: string): string => {
  const base = r.group === "" ? `/api/${r.version}` : `/apis/${r.group}/${r.version}`
  const ns = r.namespaced && namespace !== undefined ? `/namespaces/${namespace}` : ""
  return `${base}${ns}/${r.plural}${name === undefined ? "" : `/${name}`}${subresource === undefined ? "" : `/${subresource}`}`
}

export interface RequestOptions {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
  readonly path: string
  readonly query?: Readonly<Record<string, string | undefined>>
  readonly body?: unknown
  /** Defaults to application/json; PATCH needs one of the patch types. */
  readonly contentType?: string
}

/** Requests sent so far, reads (GET, watch) and writes (everything else). */
export interface RequestCounts {
  readonly reads: number
  readonly writes: number
}

export class KubeClient extends Context.Tag("@iii/controller/KubeClient")<
  KubeClient,
  {
    /** The API server's URL. */
    readonly server: string
    /** The kubeconfig context's namespace (in a pod: the pod's own), `default` when none is set. */
    readonly namespace: string
    /** One request; the parsed JSON body on 2xx, a `KubeApiError` otherwise. */
    readonly request: <A = KubeObject>(options: RequestOptions) => Effect.Effect<A, KubeApiError>
    /**
     * A watch (`GET ?watch=1`): `onEvent` gets each event as it arrives (returning "stop" ends the
     * watch); succeeds when the server or `onEvent` ends it.
     */
    readonly watch: (
      path: string,
      query: Readonly<Record<string, string | undefined>>,
      onEvent: (event: WatchEvent) => "stop" | undefined
    ) => Effect.Effect<void, KubeApiError>
    readonly counts: () => RequestCounts
  }
>() {}

export interface ConfigOptions {
  /** A kubeconfig file (`--kubeconfig`); otherwise resolved as kubectl does. */
  readonly kubeconfig?: string
  /** A kubeconfig's text (tests). Takes precedence over `kubeconfig`. */
  readonly kubeconfigText?: string
}

const inClusterNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

/** Resolves a kubeconfig the way kubectl does; fails when there is none. */
export const loadKubeConfig = (options: ConfigOptions = {}) =>
  Effect.try({
    try: () => {
      const kc = new KubeConfig()
      if (options.kubeconfigText !== undefined) kc.loadFromString(options.kubeconfigText)
      else if (options.kubeconfig !== undefined) kc.loadFromFile(options.kubeconfig)
      else if (process.env.KUBECONFIG || existsSync(join(homedir(), ".kube", "config"))) kc.loadFromDefault()
      else if (process.env.KUBERNETES_SERVICE_HOST) kc.loadFromCluster()
      else
        throw new Error(
          "no kubeconfig: pass --kubeconfig, set KUBECONFIG, create ~/.kube/config, or run in a pod"
        )
      if (kc.getCurrentCluster() === null)
        throw new Error(`kubeconfig context "${kc.getCurrentContext()}" has no cluster`)
      return kc
    },
    catch: (e) => new KubeConfigError({ message: Errors.messageOf(e) })
  })

const contextNamespace = (kc: KubeConfig): string => {
  const fromContext = kc.getContextObject(kc.getCurrentContext())?.namespace
  if (fromContext) return fromContext
  if (process.env.KUBERNETES_SERVICE_HOST && existsSync(inClusterNamespaceFile)) {
    return readFileSync(inClusterNamespaceFile, "utf8").trim()
  }
  return "default"
}

const queryString = (query: Readonly<Record<string, string | undefined>> | undefined) => {
  if (query === undefined) return ""
  const params = new URLSearchParams()
  for (const [k, v] of Object.entries(query)) if (v !== undefined) params.set(k, v)
  const s = params.toString()
  return s === "" ? "" : `?${s}`
}

interface StatusBody {
  readonly reason?: string
  readonly message?: string
}

const apiError = (method: string, path: string, status: number, body: string): KubeApiError => {
  let parsed: StatusBody = {}
  try {
    parsed = JSON.parse(body) as StatusBody
  } catch {
    parsed = { message: body.slice(0, 500) }
  }
  return new KubeApiError({
    method,
    path,
    status,
    reason: parsed.reason ?? (status === 0 ? "Unreachable" : `HTTP${status}`),
    message: `${method} ${path}: ${status === 0 ? "" : `${status} `}${parsed.message ?? body.slice(0, 500)}`
  })
}

/** A client for the cluster the kubeconfig points at. */
export const make = (kc: KubeConfig) => {
  const cluster = kc.getCurrentCluster()
  const server = (cluster?.server ?? "").replace(/\/+$/, "")
  const secure = server.startsWith("https:")
  const transport = secure ? https : http
  // One pool for the controller's lifetime; TLS material is read once, tokens per request.
  const agent = secure
    ? new https.Agent({ keepAlive: true, maxSockets: 32 })
    : new http.Agent({ keepAlive: true, maxSockets: 32 })
  let reads = 0
  let writes = 0

  const requestOptions = Effect.tryPromise({
    try: async () => {
      const opts: https.RequestOptions = { headers: {} }
      await kc.applyToHTTPSOptions(opts)
      const { ca, cert, key, rejectUnauthorized, servername, headers, auth } = opts
      const clean: https.RequestOptions = { agent, headers: { ...headers } }
      if (ca !== undefined) clean.ca = ca
      if (cert !== undefined) clean.cert = cert
      if (key !== undefined) clean.key = key
      if (rejectUnauthorized !== undefined) clean.rejectUnauthorized = rejectUnauthorized
      if (servername !== undefined) clean.servername = servername
      if (auth !== undefined) clean.auth = auth
      return clean
    },
    catch: (e) =>
      new KubeApiError({ method: "", path: "", status: 0, reason: "Credentials", message: String(e) })
  })

  const open = (
    base: https.RequestOptions,
    options: RequestOptions,
    onResponse: (res: http.IncomingMessage) => void
  ) => {
    const url = `${server}${options.path}${queryString(options.query)}`
    const body = options.body === undefined ? undefined : JSON.stringify(options.body)
    const headers: Record<string, string | number> = {
      ...(base.headers as Record<string, string>),
      accept: "application/json"
    }
    if (body !== undefined) {
      headers["content-type"] = options.contentType ?? "application/json"
      headers["content-length"] = Buffer.byteLength(body)
    }
    if (options.method === "GET") reads++
    else writes++
    const req = transport.request(url, { ...base, method: options.method, headers }, onResponse)
    req.end(body)
    return req
  }

  const request = <A = KubeObject>(options: RequestOptions): Effect.Effect<A, KubeApiError> =>
    Effect.flatMap(requestOptions, (base) =>
      Effect.async<A, KubeApiError>((resume) => {
        const fail = (status: number, text: string) =>
          resume(Effect.fail(apiError(options.method, options.path, status, text)))
        const req = open(base, options, (res) => {
          const chunks: Array<Buffer> = []
          res.on("data", (c: Buffer) => chunks.push(c))
          res.on("error", (e) => fail(0, e.message))
          res.on("end", () => {
            const text = Buffer.concat(chunks).toString("utf8")
            const status = res.statusCode ?? 0
            if (status < 200 || status >= 300) return fail(status, text)
            try {
              resume(Effect.succeed((text === "" ? {} : JSON.parse(text)) as A))
            } catch {
              fail(status, `unparsable response: ${text.slice(0, 200)}`)
            }
          })
        })
        req.on("error", (e) => fail(0, e.message))
        return Effect.sync(() => req.destroy())
      })
    )

  const watch = (
    path: string,
    query: Readonly<Record<string, string | undefined>>,
    onEvent: (event: WatchEvent) => "stop" | undefined
  ) =>
    Effect.flatMap(requestOptions, (base) =>
      Effect.async<void, KubeApiError>((resume) => {
        let done = false
        const finish = (effect: Effect.Effect<void, KubeApiError>) => {
          if (done) return
          done = true
          req.destroy()
          resume(effect)
        }
        const fail = (status: number, text: string) =>
          finish(Effect.fail(apiError("GET", path, status, text)))
        let buffered = ""
        const req = open(base, { method: "GET", path, query: { ...query, watch: "1" } }, (res) => {
          const status = res.statusCode ?? 0
          if (status !== 200) {
            const chunks: Array<Buffer> = []
            res.on("data", (c: Buffer) => chunks.push(c))
            res.on("end", () => fail(status, Buffer.concat(chunks).toString("utf8")))
            return
          }
          res.setEncoding("utf8")
          // Events are handed over synchronously as they arrive: no buffer to grow under a burst.
          res.on("data", (chunk: string) => {
            buffered += chunk
            const lines = buffered.split("\n")
            buffered = lines.pop() ?? ""
            for (const line of lines) {
              if (done) return
              if (line.trim() === "") continue
              let event: WatchEvent
              try {
                event = JSON.parse(line) as WatchEvent
              } catch {
                return fail(200, `malformed watch event: ${line.slice(0, 200)}`)
              }
              if (onEvent(event) === "stop") return finish(Effect.void)
            }
          })
          res.on("error", (e) => fail(0, e.message))
          res.on("end", () => finish(Effect.void))
        })
        req.on("error", (e) => fail(0, e.message))
        return Effect.sync(() => {
          done = true
          req.destroy()
        })
      })
    )

  return {
    server,
    namespace: contextNamespace(kc),
    request,
    watch,
    counts: () => ({ reads, writes })
  } satisfies Context.Tag.Service<KubeClient>
}

/** The client as a Layer; the connection pool lives as long as the layer. */
export const layer = (options: ConfigOptions = {}) =>
  Layer.effect(KubeClient, Effect.map(loadKubeConfig(options), make))

// ---- helpers over `request` ----------------------------------------------------------------------

/** `GET` of one object; `None` when it does not exist. */
export const getOption = (r: Resource, namespace: string | undefined, name: string) =>
  Effect.flatMap(KubeClient, (k) =>
    k.request({ method: "GET", path: pathOf(r, namespace, name) }).pipe(
      Effect.map(Option.some),
      Effect.catchIf(
        (e) => e.status === 404,
        () => Effect.succeed(Option.none<KubeObject>())
      )
    )
  )

/** Server-side apply of `object` (which names its own apiVersion/kind/metadata) as `fieldManager`. */
export const apply = (
  r: Resource,
  object: KubeObject,
  options: { readonly fieldManager: string; readonly force?: boolean; readonly subresource?: string }
) =>
  Effect.flatMap(KubeClient, (k) =>
    k.request({
      method: "PATCH",
      path: pathOf(r, object.metadata?.namespace, object.metadata?.name, options.subresource),
      query: { fieldManager: options.fieldManager, force: options.force === false ? undefined : "true" },
      contentType: "application/apply-patch+yaml",
      body: object
    })
  )

/** `DELETE`; a missing object counts as deleted. Background propagation lets the GC remove dependents. */
export const remove = (r: Resource, namespace: string | undefined, name: string) =>
  Effect.flatMap(KubeClient, (k) =>
    k
      .request({
        method: "DELETE",
        path: pathOf(r, namespace, name),
        body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" }
      })
      .pipe(
        Effect.asVoid,
        Effect.catchIf(
          (e) => e.status === 404,
          () => Effect.void
        )
      )
  )
