/**
 * What the node agent needs from the Kubernetes API: the Pods scheduled on its node, listed and then
 * watched (field selector `spec.nodeName`), over node:https.
 *
 * Not `@kubernetes/client-node` (the stack's Kubernetes client, which the controller uses): importing
 * it costs the process ~85 MB of RSS and ~32 MB of V8 heap (its generated API models, measured with
 * `node -e "import('@kubernetes/client-node')"`: RSS 42 → 127 MB, heap 4 → 36 MB), more than the
 * node agent's whole budget (≤ 100 MB, issue #12) and over its 64 MB heap limit. A pod watch is one
 * GET that streams JSON lines; credentials are the service account's (in a cluster) or a kubeconfig's
 * token or client certificate (a kubeconfig whose user needs an exec plugin or an auth provider is
 * refused, saying so: the node agent runs in its cluster, with its service account).
 */
import { existsSync, readFileSync } from "node:fs"
import type * as http from "node:http"
import * as https from "node:https"
import { createRequire } from "node:module"
import { homedir } from "node:os"
import { dirname, join, resolve } from "node:path"
import { createInterface } from "node:readline"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as Yaml from "yaml"
import { AgentConfigError } from "../Errors.js"
import { Http } from "./NodeHttp.js"

/** How to reach and authenticate to the API server. */
export interface KubeAccess {
  readonly server: string
  readonly ca?: string | Buffer | undefined
  readonly cert?: string | Buffer | undefined
  readonly key?: string | Buffer | undefined
  readonly insecure?: boolean
  /** Extra headers per request (a bearer token, re-read each time: projected tokens rotate). */
  readonly headers: () => Record<string, string>
  /** Where the credentials came from, for the log. */
  readonly source: string
}

export const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

const bearer = (token: string): Record<string, string> => ({ authorization: `Bearer ${token}` })

/** The pod's service account, when running in a cluster. */
export const inCluster = (
  env: NodeJS.ProcessEnv = process.env,
  dir = serviceAccountDir
): KubeAccess | undefined => {
  const host = env.KUBERNETES_SERVICE_HOST
  const tokenFile = join(dir, "token")
  if (host === undefined || !existsSync(tokenFile)) return undefined
  const port = env.KUBERNETES_SERVICE_PORT ?? "443"
  return {
    server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
    ca: readFileSync(join(dir, "ca.crt")),
    headers: () => bearer(readFileSync(tokenFile, "utf8").trim()),
    source: `service account (${dir})`
  }
}

interface Named<T> {
  readonly name: string
  readonly [key: string]: unknown
  readonly value?: T
}

type Fields = Readonly<Record<string, unknown>>

// Loaded only to read a kubeconfig: in a cluster (the DaemonSet) the agent never parses YAML, and the
// yaml package's 72 modules are ~2 MB of RSS (README, "Memory").
const yaml = (): typeof Yaml => createRequire(import.meta.url)("yaml")

const text = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined)

/** A kubeconfig's current context, as what `KubeAccess` needs; `needsClient` for exec/auth-provider users. */
export const fromKubeconfigText = (
  content: string,
  file: string
): { readonly access: KubeAccess } | { readonly needsClient: true } | { readonly error: string } => {
  let config: Fields
  try {
    config = (yaml().parse(content) ?? {}) as Fields
  } catch (error) {
    return { error: `${file}: not YAML: ${String(error)}` }
  }
  const pick = (list: unknown, name: unknown, field: string): Fields | undefined => {
    const entry = (Array.isArray(list) ? (list as ReadonlyArray<Named<unknown>>) : []).find(
      (e) => e.name === name
    )
    return entry === undefined ? undefined : ((entry as Fields)[field] as Fields | undefined)
  }
  const contextName =
    text(config["current-context"]) ?? (config.contexts as ReadonlyArray<Named<unknown>>)?.[0]?.name
  const context = pick(config.contexts, contextName, "context")
  if (context === undefined) return { error: `${file}: no context ${contextName ?? "(none set)"}` }
  const cluster = pick(config.clusters, context.cluster, "cluster")
  const user = pick(config.users, context.user, "user") ?? {}
  const server = text(cluster?.server)
  if (server === undefined) return { error: `${file}: cluster ${String(context.cluster)} has no server` }
  if (user.exec !== undefined || user["auth-provider"] !== undefined) return { needsClient: true }
  // Relative paths in a kubeconfig are relative to the file.
  const base = dirname(resolve(file))
  const material = (data: unknown, path: unknown): Buffer | undefined => {
    const inline = text(data)
    if (inline !== undefined) return Buffer.from(inline, "base64")
    const name = text(path)
    return name === undefined ? undefined : readFileSync(resolve(base, name))
  }
  const token = text(user.token)
  const tokenFile = text(user.tokenFile)
  const basic =
    text(user.username) === undefined
      ? undefined
      : `Basic ${Buffer.from(`${text(user.username)}:${text(user.password) ?? ""}`).toString("base64")}`
  return {
    access: {
      server,
      ca: material(cluster?.["certificate-authority-data"], cluster?.["certificate-authority"]),
      cert: material(user["client-certificate-data"], user["client-certificate"]),
      key: material(user["client-key-data"], user["client-key"]),
      insecure: cluster?.["insecure-skip-tls-verify"] === true,
      headers: () =>
        token !== undefined
          ? bearer(token)
          : tokenFile !== undefined
            ? bearer(readFileSync(resolve(base, tokenFile), "utf8").trim())
            : basic !== undefined
              ? { authorization: basic }
              : {},
      source: `kubeconfig ${file} (context ${contextName})`
    }
  }
}

/**
 * Credentials the way kubectl finds them: `--kubeconfig`, else the service account when in a
 * cluster, else `$KUBECONFIG`, else `~/.kube/config`.
 */
export const resolveAccess = (kubeconfig: string | undefined): Effect.Effect<KubeAccess, AgentConfigError> =>
  Effect.suspend(() => {
    const cluster = kubeconfig === undefined ? inCluster() : undefined
    if (cluster !== undefined) return Effect.succeed(cluster)
    const file =
      kubeconfig ??
      process.env.KUBECONFIG?.split(":").find((f) => f !== "") ??
      join(homedir(), ".kube", "config")
    if (!existsSync(file))
      return Effect.fail(
        new AgentConfigError({
          message: `no Kubernetes credentials: not in a cluster (no service account) and no kubeconfig at ${file}; give --kubeconfig`
        })
      )
    const parsed = fromKubeconfigText(readFileSync(file, "utf8"), file)
    if ("access" in parsed) return Effect.succeed(parsed.access)
    return Effect.fail(
      new AgentConfigError({
        message:
          "error" in parsed
            ? `--kubeconfig ${parsed.error}`
            : `--kubeconfig ${file}: its user needs an exec plugin or an auth provider, which the node agent does not run; give a token or client-certificate kubeconfig, or run it in the cluster (service account)`
      })
    )
  })

/** The few fields of a Pod the node agent reads. */
export interface Pod {
  readonly metadata: {
    readonly uid: string
    readonly name: string
    readonly namespace: string
    readonly labels?: Readonly<Record<string, string>>
    readonly annotations?: Readonly<Record<string, string>>
    readonly deletionTimestamp?: string
  }
  readonly spec?: { readonly nodeName?: string }
  readonly status?: {
    readonly phase?: string
    readonly qosClass?: "Guaranteed" | "Burstable" | "BestEffort"
    readonly containerStatuses?: ReadonlyArray<{
      readonly name: string
      readonly containerID?: string
      readonly restartCount?: number
      readonly state?: { readonly running?: unknown; readonly terminated?: unknown }
    }>
  }
}

export interface PodEvents {
  /** The full set after a (re)list: pods missing from it are gone. */
  onList(pods: ReadonlyArray<Pod>): void
  onPod(type: "ADDED" | "MODIFIED" | "DELETED", pod: Pod): void
}

class WatchGone extends Error {}

/** GET `path`; the response once its status is known. */
const get = (access: KubeAccess, path: string) =>
  Effect.async<http.IncomingMessage, Error>((resume) => {
    const url = new URL(path, access.server)
    const transport = url.protocol === "https:" ? https : Http
    const request = transport.request(url, {
      method: "GET",
      headers: { accept: "application/json", ...access.headers() },
      ca: access.ca,
      cert: access.cert,
      key: access.key,
      rejectUnauthorized: access.insecure !== true
    })
    request.on("response", (response) => resume(Effect.succeed(response)))
    request.on("error", (error) => resume(Effect.fail(error)))
    request.end()
    return Effect.sync(() => request.destroy())
  })

const readAll = (response: http.IncomingMessage) =>
  Effect.async<string, Error>((resume) => {
    const chunks: Array<Buffer> = []
    response.on("data", (chunk: Buffer) => chunks.push(chunk))
    response.on("end", () => resume(Effect.succeed(Buffer.concat(chunks).toString("utf8"))))
    response.on("error", (error) => resume(Effect.fail(error)))
  })

const failed = (response: http.IncomingMessage, body: string) =>
  new Error(`HTTP ${response.statusCode}: ${body.slice(0, 300)}`)

/** Lists the node's pods (every page); returns them and the list's resourceVersion. */
const list = (access: KubeAccess, selector: string) =>
  Effect.gen(function* () {
    const pods: Array<Pod> = []
    let token: string | undefined
    let version = ""
    do {
      const page = token === undefined ? "" : `&continue=${encodeURIComponent(token)}`
      const response = yield* get(access, `/api/v1/pods?fieldSelector=${selector}&limit=500${page}`)
      const body = yield* readAll(response)
      if (response.statusCode !== 200) return yield* Effect.fail(failed(response, body))
      const parsed = JSON.parse(body) as {
        items: Array<Pod>
        metadata: { resourceVersion: string; continue?: string }
      }
      pods.push(...parsed.items)
      version = parsed.metadata.resourceVersion
      token = parsed.metadata.continue === "" ? undefined : parsed.metadata.continue
    } while (token !== undefined)
    return { pods, version }
  })

/** Watches from `version` until the server ends the watch; returns the last version seen. */
const watch = (access: KubeAccess, selector: string, version: string, events: PodEvents) =>
  Effect.gen(function* () {
    const response = yield* get(
      access,
      `/api/v1/pods?fieldSelector=${selector}&watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion=${version}`
    )
    if (response.statusCode === 410) return yield* Effect.fail(new WatchGone("expired"))
    if (response.statusCode !== 200) return yield* Effect.fail(failed(response, yield* readAll(response)))
    return yield* Effect.async<string, Error>((resume) => {
      let last = version
      const lines = createInterface({ input: response })
      lines.on("line", (line) => {
        if (line.trim() === "") return
        const event = JSON.parse(line) as { type: string; object: Pod & { code?: number } }
        if (event.type === "ERROR") {
          lines.close()
          response.destroy()
          resume(
            Effect.fail(event.object.code === 410 ? new WatchGone("expired") : new Error(line.slice(0, 300)))
          )
          return
        }
        last = (event.object.metadata as { resourceVersion?: string }).resourceVersion ?? last
        if (event.type === "ADDED" || event.type === "MODIFIED" || event.type === "DELETED")
          events.onPod(event.type, event.object)
      })
      response.on("end", () => resume(Effect.succeed(last)))
      response.on("error", (error) => resume(Effect.fail(error)))
      return Effect.sync(() => response.destroy())
    })
  })

/**
 * The pods on `nodeName`, listed then watched, for as long as the scope lives: a watch that ends is
 * resumed from the last version seen; one the server expired (410) or that failed starts over with
 * a list (backing off 0.5 s → 30 s while the API server is unreachable).
 */
export const watchPods = (
  access: KubeAccess,
  nodeName: string,
  events: PodEvents
): Effect.Effect<void, never, Scope.Scope> => {
  const selector = encodeURIComponent(`spec.nodeName=${nodeName}`)
  const cycle = Effect.gen(function* () {
    const listed = yield* list(access, selector)
    events.onList(listed.pods)
    let version = listed.version
    for (;;) version = yield* watch(access, selector, version, events)
  }).pipe(
    Effect.tapError((error) =>
      error instanceof WatchGone
        ? Effect.void
        : Effect.logWarning(`watching the pods of node ${nodeName} (${access.source}): ${error.message}`)
    ),
    Effect.retry(
      Schedule.exponential("500 millis").pipe(
        Schedule.union(Schedule.spaced("30 seconds")),
        Schedule.resetAfter("1 minute")
      )
    )
  )
  return Effect.asVoid(Effect.forkScoped(cycle))
}
