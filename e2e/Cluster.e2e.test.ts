/**
 * iii end to end on a real one-node Kubernetes cluster (scripts/cluster.sh): the images built here
 * (scripts/images.sh) and loaded into the node's containerd, iii installed by its one command
 * (scripts/kube-install.sh) from manifests/, then the seed composition with the project's two demo services
 * (images/demo: `auth` calls `profile`) traced, scaled and removed, all through the real kubelet, scheduler,
 * controller-manager, kube-proxy, CoreDNS and the API server's aggregator.
 *
 * The agent runs as the sidecar the controller injects (the node DaemonSet is not built yet); the overlay
 * e2e/overlay runs one obs node on a hostPath volume (the cluster has no storage provisioner).
 * Needs root, Go (to build Kubernetes, cached after the first ~16 min), apt-get or containerd, Podman or
 * apt-get, and eBPF; skipped with the reason otherwise. Stops the cluster at the end.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { EbpfCapture } from "@iii/agent"
import { Effect } from "effect"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { parse, stringify } from "yaml"

const repo = fileURLToPath(new URL("..", import.meta.url))
const has = (command: string) => spawnSync("sh", ["-c", `command -v ${command}`]).status === 0

const skipReason = (() => {
  if (process.getuid?.() !== 0) return "the cluster needs root (network setup, containerd, kubelet)"
  if (!has("go")) return "Go is not installed: Kubernetes is built from its Go modules"
  if (!has("apt-get") && !(has("containerd") && has("runc")))
    return "containerd and runc are not installed, and there is no apt-get to install them"
  if (!has("apt-get") && !has("podman"))
    return "Podman is not installed, and there is no apt-get to install it"
  const ebpf = Effect.runSync(EbpfCapture.isAvailable)
  if (!ebpf.available) return `the agent cannot capture with eBPF here: ${ebpf.reasons.join("; ")}`
  return undefined
})()
if (skipReason !== undefined) console.warn(`e2e test skipped: ${skipReason}`)

const version = (
  JSON.parse(readFileSync(join(repo, "packages/cli/package.json"), "utf8")) as { version: string }
).version
const image = (name: string) => `localhost/${name}:${version}`
const namespace = "shop"
const composition = "user-service"
const state = "/var/lib/iii-cluster"

/** KUBECONFIG and PATH (kubectl) of the test cluster, from `scripts/cluster.sh env`. */
const clusterEnv = (): NodeJS.ProcessEnv => {
  const env: NodeJS.ProcessEnv = { ...process.env }
  const lines = execFileSync("bash", ["scripts/cluster.sh", "env"], { cwd: repo, encoding: "utf8" })
  for (const [, name, value] of lines.matchAll(/^export (\w+)="?(.*?)"?$/gm))
    if (name !== undefined && value !== undefined) env[name] = value.replace("$PATH", process.env.PATH ?? "")
  return env
}
const env = skipReason === undefined ? clusterEnv() : process.env

/** Runs a command in the repository; its stderr goes to the test's output, its stdout is returned. */
const run = (command: string, args: ReadonlyArray<string>, input?: string) =>
  execFileSync(command, args, {
    cwd: repo,
    env,
    encoding: "utf8",
    input,
    stdio: ["pipe", "pipe", "inherit"],
    maxBuffer: 64 * 1024 * 1024
  })
const kubectl = (...args: ReadonlyArray<string>) => run("kubectl", args)
const kubectlJson = <A>(...args: ReadonlyArray<string>) => JSON.parse(kubectl(...args, "-o", "json")) as A
const apply = (manifest: object | string) =>
  run("kubectl", ["apply", "-f", "-"], typeof manifest === "string" ? manifest : stringify(manifest))

/** Timings of each phase, printed at the end (the CI budget is measured from them). */
const timings: Array<string> = []
const timed = <A>(what: string, f: () => A): A => {
  const start = Date.now()
  const result = f()
  timings.push(`${what}: ${((Date.now() - start) / 1000).toFixed(1)} s`)
  console.log(`e2e: ${timings.at(-1)}`)
  return result
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
/** Polls `probe` until it returns a value (not undefined), or fails with the last observation. */
const eventually = async <A>(
  what: string,
  seconds: number,
  probe: () => A | undefined | Promise<A | undefined>
) => {
  const deadline = Date.now() + seconds * 1000
  let last: unknown
  for (;;) {
    try {
      const value = await probe()
      if (value !== undefined) return value
    } catch (error) {
      last = error
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${seconds} s waiting for ${what}${last === undefined ? "" : `: ${String(last)}`}`
      )
    await sleep(1000)
  }
}

interface Meta {
  readonly name: string
  readonly labels?: Record<string, string>
}
interface Pod {
  readonly metadata: Meta
  readonly spec: {
    readonly securityContext?: { readonly runAsUser?: number }
    readonly containers: ReadonlyArray<{
      readonly securityContext?: { readonly readOnlyRootFilesystem?: boolean }
    }>
  }
  readonly status: {
    readonly phase: string
    readonly podIP?: string
    readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>
  }
}
interface List<A> {
  readonly items: ReadonlyArray<A>
}
const isReady = (pod: Pod) =>
  pod.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false
const pods = (ns: string, selector: string) =>
  kubectlJson<List<Pod>>("-n", ns, "get", "pods", "-l", selector).items

interface Span {
  readonly traceId: string
  readonly spanId: string
  readonly kind: "server" | "client"
  readonly service: string
  readonly composition?: string
  readonly component?: string
  readonly namespace?: string
  readonly pod?: string
  readonly name: string
  readonly http?: { readonly statusCode?: number }
}
interface LogRecord {
  readonly body: string
  readonly service: string
  readonly pod?: string
  readonly traceId?: string
}

/** obs' query API, from this host to the obs pod's IP (the host routes to pods over the CNI bridge). */
const obs = async <A>(path: string): Promise<{ status: number; body: A }> => {
  const [pod] = pods("iii-system", "app.kubernetes.io/name=iii-obs")
  if (pod?.status.podIP === undefined) throw new Error("obs has no pod IP")
  const response = await fetch(`http://${pod.status.podIP}:4320${path}`, {
    signal: AbortSignal.timeout(10_000)
  })
  return { status: response.status, body: (await response.json()) as A }
}
const trace = async (traceId: string) => {
  const { status, body } = await obs<{ spans: ReadonlyArray<Span> }>(`/v1/traces/${traceId}`)
  return status === 200 ? body.spans : []
}

/** A load generator pod (the auth image's `load` role) sending COUNT requests to auth's Service. */
const startLoad = (name: string, count: number, slowMs = 0) => {
  kubectl("-n", namespace, "delete", "pod", name, "--ignore-not-found", "--wait")
  kubectl(
    ...["-n", namespace, "run", name, `--image=${image("iii-demo-auth")}`, "--restart=Never"],
    ...[
      "--image-pull-policy=Never",
      "--",
      "load",
      `http://${composition}-auth:8080/login`,
      String(count),
      String(slowMs)
    ]
  )
}
const loadResult = async (name: string, seconds: number) => {
  await eventually(`load generator ${name} to finish`, seconds, () => {
    const phase = kubectlJson<Pod>("-n", namespace, "get", "pod", name).status.phase
    if (phase === "Failed") throw new Error(`${name} failed: ${kubectl("-n", namespace, "logs", name)}`)
    return phase === "Succeeded" ? true : undefined
  })
  const line = kubectl("-n", namespace, "logs", name)
    .split("\n")
    .find((l) => l.startsWith('{"result"'))
  return (JSON.parse(line ?? "null") as { result: { ok: number; failed: number; traceIds: Array<string> } })
    .result
}

const diagnose = () => {
  for (const args of [
    ["get", "pods", "-A", "-o", "wide"],
    ["get", "events", "-A", "--sort-by=.lastTimestamp"],
    [
      "-n",
      "iii-system",
      "logs",
      "-l",
      "app.kubernetes.io/part-of=iii",
      "--tail=30",
      "--all-containers",
      "--prefix"
    ],
    [
      "-n",
      namespace,
      "logs",
      "-l",
      `iii.io/composition=${composition}`,
      "--tail=20",
      "--all-containers",
      "--prefix"
    ]
  ]) {
    const out = spawnSync("kubectl", args, { env, encoding: "utf8" })
    console.log(`--- kubectl ${args.join(" ")}\n${out.stdout}${out.stderr}`)
  }
}

describe.skipIf(skipReason !== undefined)("iii on a one-node Kubernetes cluster", () => {
  const archives = mkdtempSync(join(tmpdir(), "iii-e2e-images-"))
  let digests = ""
  /** Traces seen complete before obs is restarted, with their span counts. */
  const stored = new Map<string, number>()

  beforeAll(() => {
    // A fresh cluster each run: nothing left from an earlier one (binaries and certificates stay cached).
    timed("cluster reset", () => run("bash", ["scripts/cluster.sh", "reset"]))
    timed("cluster start (builds Kubernetes the first time)", () =>
      run("bash", ["scripts/cluster.sh", "start"])
    )
    digests = timed("images (npm run images -- --demo)", () =>
      run("bash", ["scripts/images.sh", "--demo", "--save", archives])
    )
    console.log(digests)
    timed("image import", () =>
      run("bash", ["scripts/cluster.sh", "import", ...readdirSync(archives).map((f) => join(archives, f))])
    )
    const volume = `${state}/volumes/iii-obs-0`
    mkdirSync(volume, { recursive: true })
    chownSync(volume, 65532, 65532)
    timed("install (scripts/kube-install.sh)", () =>
      run("bash", ["scripts/kube-install.sh", "--images", "localhost", "--kustomization", "e2e/overlay"])
    )
  })

  afterEach((context) => {
    if (context.task.result?.state === "fail") diagnose()
  })

  afterAll(() => {
    rmSync(archives, { recursive: true, force: true })
    timed("cluster stop", () => run("bash", ["scripts/cluster.sh", "stop"]))
    console.log(`e2e timings:\n  ${timings.join("\n  ")}`)
  })

  it("builds reproducible images: a second build of the commit gives the same digests", () => {
    const again = timed("images, second build", () => run("bash", ["scripts/images.sh", "--demo"]))
    const digestLines = (table: string) => table.split("\n").filter((l) => l.includes("sha256:"))
    expect(digestLines(digests)).toHaveLength(4)
    expect(digestLines(again)).toEqual(digestLines(digests))
    const labels = JSON.parse(
      run("podman", ["image", "inspect", "--format", "{{json .Labels}}", image("iii")])
    ) as Record<string, string>
    expect(labels).toMatchObject({
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.revision": expect.stringMatching(/^[0-9a-f]{40}(-dirty)?$/),
      "org.opencontainers.image.source": expect.stringMatching(/^https:\/\//)
    })
  })

  it("installs iii: two controllers with one leader, obs on its volume, the External Metrics API, restricted Pod Security", () => {
    const controllers = pods("iii-system", "app.kubernetes.io/name=iii-controller")
    expect(controllers.filter(isReady)).toHaveLength(2)
    const lease = kubectlJson<{ spec: { holderIdentity?: string } }>(
      "-n",
      "iii-system",
      "get",
      "lease",
      "iii-controller"
    )
    expect(controllers.map((p) => p.metadata.name)).toContain(lease.spec.holderIdentity)
    const [obsPod] = pods("iii-system", "app.kubernetes.io/name=iii-obs")
    expect(obsPod !== undefined && isReady(obsPod)).toBe(true)
    const claim = kubectlJson<{ status: { phase: string }; spec: { volumeName: string } }>(
      ...["-n", "iii-system", "get", "pvc", "data-iii-obs-0"]
    )
    expect(claim).toMatchObject({ status: { phase: "Bound" }, spec: { volumeName: "iii-e2e-obs-0" } })
    expect(
      kubectl(
        "get",
        "apiservice",
        "v1beta1.external.metrics.k8s.io",
        "-o",
        "jsonpath={.status.conditions[0].status}"
      )
    ).toBe("True")
    // The namespace enforces `restricted`, so running pods passed it; and they run as they should.
    expect(
      kubectl(
        "get",
        "ns",
        "iii-system",
        "-o",
        "jsonpath={.metadata.labels.pod-security\\.kubernetes\\.io/enforce}"
      )
    ).toBe("restricted")
    for (const pod of [...controllers, ...(obsPod === undefined ? [] : [obsPod])]) {
      expect(pod.spec.securityContext?.runAsUser).toBe(65532)
      expect(pod.spec.containers[0]?.securityContext?.readOnlyRootFilesystem).toBe(true)
    }
    const said = kubectl(
      ...["-n", "iii-system", "exec", controllers[0]?.metadata.name ?? "", "--"],
      ...["/usr/local/bin/node", "/opt/iii/packages/cli/dist/bin.js", "--version"]
    )
    expect(said.trim()).toBe(version)
  })

  it("reconciles the seed composition: Deployments, Services and the HPA, Ready when its pods are", async () => {
    const seed = parse(readFileSync(join(repo, "manifests/examples/user-service.yaml"), "utf8")) as {
      metadata: { namespace?: string }
      spec: { components: Array<{ name: string; image: string }> }
    }
    seed.metadata.namespace = namespace
    for (const c of seed.spec.components) c.image = image(`iii-demo-${c.name}`)
    apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } })
    apply(seed)

    interface Status {
      readonly status?: {
        readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>
        readonly components?: ReadonlyArray<{ name: string; desiredReplicas: number; readyReplicas: number }>
      }
    }
    const readiness: Array<string> = []
    const ready = await eventually("the composition to be Ready", 240, () => {
      const c = kubectlJson<Status>("-n", namespace, "get", "servicecomposition", composition)
      const value = c.status?.conditions?.find((x) => x.type === "Ready")?.status
      if (value !== undefined && readiness.at(-1) !== value) readiness.push(value)
      return value === "True" ? c : undefined
    })
    // Not Ready while its pods were starting; Ready once every component's pods are.
    expect(readiness).toEqual(["False", "True"])
    for (const component of ready.status?.components ?? [])
      expect(component.readyReplicas).toBe(component.desiredReplicas)

    const children = (kind: string) =>
      kubectlJson<List<{ metadata: Meta }>>(
        "-n",
        namespace,
        "get",
        kind,
        "-l",
        `iii.io/composition=${composition}`
      )
        .items.map((o) => o.metadata.name)
        .sort()
    expect(children("deployments")).toEqual([`${composition}-auth`, `${composition}-profile`])
    expect(children("services")).toEqual([`${composition}-auth`, `${composition}-profile`])
    expect(children("hpa")).toEqual([`${composition}-auth`])
    // The HPA brings auth to its minimum of 3 replicas.
    await eventually("auth at 3 ready replicas", 180, () =>
      pods(namespace, `iii.io/component=auth`).filter(isReady).length >= 3 ? true : undefined
    )
  })

  it("turns in-cluster traffic to auth into spans labelled with composition, component and pod, one trace from auth to profile, with the pods' logs", async () => {
    startLoad("load-traces", 60)
    const result = await loadResult("load-traces", 180)
    expect(result).toMatchObject({ ok: 60, failed: 0 })
    const authPods = pods(namespace, "iii.io/component=auth").map((p) => p.metadata.name)
    const profilePods = pods(namespace, "iii.io/component=profile").map((p) => p.metadata.name)

    for (const traceId of result.traceIds) {
      const spans = await eventually(`trace ${traceId} with auth's and profile's spans`, 90, async () => {
        const found = await trace(traceId)
        const complete =
          found.some((s) => s.service === "auth" && s.kind === "server") &&
          found.some((s) => s.service === "auth" && s.kind === "client") &&
          found.some((s) => s.service === "profile" && s.kind === "server")
        return complete ? found : undefined
      })
      stored.set(traceId, spans.length)
      for (const span of spans) {
        expect(span).toMatchObject({ traceId, composition, namespace })
        const component = span.service
        expect(span.component).toBe(component)
        expect(component === "auth" ? authPods : profilePods).toContain(span.pod)
      }
      expect(spans.find((s) => s.service === "auth" && s.kind === "client")?.name).toMatch(/^GET \/profile\//)
      expect(spans.find((s) => s.service === "profile" && s.kind === "server")?.http?.statusCode).toBe(200)
    }

    const [first] = result.traceIds
    const correlated = await eventually("the trace's log lines", 60, async () => {
      const { status, body } = await obs<{ logs: ReadonlyArray<LogRecord> }>(`/v1/correlate/${first}`)
      const logs = status === 200 ? body.logs : []
      return logs.some((l) => l.service === "auth") && logs.some((l) => l.service === "profile")
        ? logs
        : undefined
    })
    for (const line of correlated) {
      expect(line.traceId).toBe(first)
      expect(line.service === "auth" ? authPods : profilePods).toContain(line.pod)
    }
    const bodies = correlated.map((l) => l.body)
    expect(bodies.some((b) => /^user-\d+ logged in$/.test(b) || b.includes("logged in"))).toBe(true)
    expect(bodies.some((b) => b.includes("profile of user-"))).toBe(true)
  })

  it("serves iii_p99_latency_ms to the HPA through the aggregator, and a slow auth scales it up", async () => {
    const selector = encodeURIComponent(`iii.io/composition=${composition},iii.io/component=auth`)
    const path = `/apis/external.metrics.k8s.io/v1beta1/namespaces/${namespace}/iii_p99_latency_ms?labelSelector=${selector}`
    const metric = JSON.parse(kubectl("get", "--raw", path)) as {
      items: ReadonlyArray<{ metricName: string; value: string }>
    }
    expect(metric.items[0]?.metricName).toBe("iii_p99_latency_ms")
    const quantity = (q: string) => (q.endsWith("m") ? Number(q.slice(0, -1)) / 1000 : Number(q))
    expect(quantity(metric.items[0]?.value ?? "NaN")).toBeLessThan(200)

    interface Hpa {
      readonly status: {
        readonly desiredReplicas: number
        readonly currentMetrics?: ReadonlyArray<{
          readonly external?: { readonly current: { readonly value?: string } }
        }>
      }
    }
    const hpa = () => kubectlJson<Hpa>("-n", namespace, "get", "hpa", `${composition}-auth`)
    // The HPA controller read the metric too (kube-controller-manager, through the same aggregator).
    await eventually(
      "the HPA to read the metric",
      120,
      () => hpa().status.currentMetrics?.[0]?.external?.current.value
    )
    // Every request now waits 400 ms in auth: p99 ~400 ms against a 200 ms target.
    startLoad("load-slow", 1200, 400)
    const scaled = await eventually("the HPA to scale auth up", 240, () => {
      const status = hpa().status
      return status.desiredReplicas > 3 ? status : undefined
    })
    const p99 = quantity(scaled.currentMetrics?.[0]?.external?.current.value ?? "NaN")
    expect(p99).toBeGreaterThan(200)
    await eventually("auth's Deployment to follow", 60, () => {
      const replicas = kubectlJson<{ spec: { replicas: number } }>(
        "-n",
        namespace,
        "get",
        "deployment",
        `${composition}-auth`
      ).spec.replicas
      return replicas > 3 ? replicas : undefined
    })
    kubectl("-n", namespace, "delete", "pod", "load-slow", "--wait=false")
  })

  it("loses no acknowledged span when the obs pod is deleted: the StatefulSet brings it back on its volume", async () => {
    expect(stored.size).toBeGreaterThan(0)
    const [before] = pods("iii-system", "app.kubernetes.io/name=iii-obs")
    kubectl("-n", "iii-system", "delete", "pod", "iii-obs-0", "--wait")
    await eventually("obs to be Ready again", 180, () => {
      const [pod] = pods("iii-system", "app.kubernetes.io/name=iii-obs")
      return pod !== undefined && isReady(pod) && pod.metadata.name === before?.metadata.name
        ? pod
        : undefined
    })
    for (const [traceId, count] of stored) expect((await trace(traceId)).length).toBe(count)
    // The agents reconnect on their own: new traffic is traced again.
    startLoad("load-after-restart", 20)
    const result = await loadResult("load-after-restart", 180)
    const [traceId] = result.traceIds
    await eventually("a trace sent after the restart", 120, async () =>
      (await trace(traceId ?? "")).length >= 3 ? true : undefined
    )
  })

  it("removes everything the composition created when it is deleted", async () => {
    kubectl("-n", namespace, "delete", "servicecomposition", composition, "--wait")
    await eventually("the composition's objects and pods to be gone", 180, () => {
      const left = kubectl(
        ...["-n", namespace, "get", "deployments,replicasets,services,hpa,pods"],
        ...["-l", `iii.io/composition=${composition}`, "-o", "name"]
      ).trim()
      return left === "" ? true : undefined
    })
  })
})
