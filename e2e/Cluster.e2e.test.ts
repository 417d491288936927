/**
 * iii end to end on a real one-node Kubernetes cluster (scripts/cluster.sh): the images built here
 * (scripts/images.sh) and loaded into the node's containerd, iii installed by its one command
 * (scripts/kube-install.sh) from manifests/, then the seed composition with the project's two demo services
 * (images/demo: `auth` calls `profile`) traced, scaled and removed, all through the real kubelet, scheduler,
 * controller-manager, kube-proxy, CoreDNS and the API server's aggregator.
 *
 * The agent is the node agent DaemonSet (manifests/node-agent): the controller, in its default agentMode
 * node, labels the pods and injects nothing; the agent finds each pod's cgroups, traces it with eBPF and
 * reads its log lines from the kubelet's CRI log files. The overlay e2e/overlay runs one obs node on a
 * hostPath volume (the cluster has no storage provisioner).
 * Needs root, Go (to build Kubernetes, cached after the first ~16 min), apt-get or containerd, Podman or
 * apt-get, and eBPF; skipped with the reason otherwise. Stops the cluster at the end.
 */
import { execFileSync, spawn, spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
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

/**
 * Runs a command in the repository; its stderr goes to the test's output, its stdout is returned.
 * Asynchronous: a test worker blocked for minutes loses its connection to vitest.
 */
const run = (command: string, args: ReadonlyArray<string>, input?: string) =>
  new Promise<string>((resolve, reject) => {
    const child = spawn(command, args, { cwd: repo, env, stdio: ["pipe", "pipe", "inherit"] })
    let out = ""
    child.stdout.setEncoding("utf8")
    child.stdout.on("data", (chunk: string) => {
      out += chunk
    })
    child.on("error", reject)
    child.on("close", (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${command} ${args.join(" ")} exited with ${code}: ${out}`))
    )
    child.stdin.end(input)
  })
const kubectl = (...args: ReadonlyArray<string>) => run("kubectl", args)
const kubectlJson = async <A>(...args: ReadonlyArray<string>) =>
  JSON.parse(await kubectl(...args, "-o", "json")) as A
const apply = (manifest: object) => run("kubectl", ["apply", "-f", "-"], stringify(manifest))
/**
 * Follows `kubectl get --watch` and keeps every line it prints (one per version of the objects), so a state
 * the objects pass through briefly is seen, which polling can miss. Stop it with `stop()`.
 */
const watch = (...args: ReadonlyArray<string>) => {
  const child = spawn("kubectl", ["get", "--watch", ...args], {
    cwd: repo,
    env,
    stdio: ["ignore", "pipe", "inherit"]
  })
  const lines: Array<string> = []
  let partial = ""
  child.stdout.setEncoding("utf8")
  child.stdout.on("data", (chunk: string) => {
    const parts = (partial + chunk).split("\n")
    partial = parts.pop() ?? ""
    lines.push(...parts)
  })
  return { lines, stop: () => child.kill() }
}

/** Timings of each phase, printed at the end (the CI budget is measured from them). */
const timings: Array<string> = []
const timed = async <A>(what: string, f: () => Promise<A>): Promise<A> => {
  const start = Date.now()
  const result = await f()
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
  readonly uid?: string
  readonly labels?: Record<string, string>
}
interface Container {
  readonly name: string
  readonly securityContext?: {
    readonly readOnlyRootFilesystem?: boolean
    readonly privileged?: boolean
    readonly allowPrivilegeEscalation?: boolean
    readonly capabilities?: { readonly add?: ReadonlyArray<string>; readonly drop?: ReadonlyArray<string> }
  }
}
interface Pod {
  readonly metadata: Meta & { readonly annotations?: Record<string, string> }
  readonly spec: {
    readonly nodeName?: string
    readonly hostPID?: boolean
    readonly hostNetwork?: boolean
    readonly shareProcessNamespace?: boolean
    readonly securityContext?: { readonly runAsUser?: number }
    readonly initContainers?: ReadonlyArray<Container>
    readonly containers: ReadonlyArray<Container>
  }
  readonly status: {
    readonly phase: string
    readonly podIP?: string
    readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>
    readonly containerStatuses?: ReadonlyArray<{ readonly name: string; readonly containerID?: string }>
  }
}
interface List<A> {
  readonly items: ReadonlyArray<A>
}
const isReady = (pod: Pod) =>
  pod.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false
const pods = async (ns: string, selector: string) =>
  (await kubectlJson<List<Pod>>("-n", ns, "get", "pods", "-l", selector)).items

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
  /** Unix nanoseconds, as a decimal string (obs' JSON). */
  readonly startTimeUnixNano: string
  readonly durationNano: number
  readonly http?: { readonly statusCode?: number }
  readonly attributes?: Record<string, string | number | boolean>
}
interface LogRecord {
  readonly timeUnixNano: string
  readonly body: string
  readonly service: string
  readonly pod?: string
  readonly stream?: string
  readonly traceId?: string
  readonly attributes?: Record<string, string | number | boolean>
}
/** A span's start and end in unix nanoseconds. */
const interval = (span: Span) => {
  const start = BigInt(span.startTimeUnixNano)
  return { start, end: start + BigInt(span.durationNano) }
}
/** An RFC 3339 time with up to nanoseconds (the kubelet's log timestamps) in unix nanoseconds. */
const unixNano = (time: string) => {
  const match = /^(.{19})(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$/.exec(time)
  if (match === null) throw new Error(`not an RFC 3339 time: ${time}`)
  const [, seconds = "", fraction = "", zone = ""] = match
  return BigInt(Date.parse(`${seconds}${zone}`)) * 1_000_000n + BigInt(fraction.padEnd(9, "0"))
}

/** The node agent's pods (one per node: the test cluster has one node). */
const agentPods = () => pods("iii-node-agent", "app.kubernetes.io/name=iii-agent")

/**
 * The capability sets of a container's processes, as the kernel has them (/proc/PID/status, hex), found
 * on this host (the node) by the container's ID in their cgroup paths.
 */
const processCapabilities = (containerId: string) => {
  const found: Array<{ command: string; effective: bigint; permitted: bigint; bounding: bigint }> = []
  for (const pid of readdirSync("/proc").filter((entry) => /^\d+$/.test(entry))) {
    let status: string
    let command: string
    try {
      if (!readFileSync(`/proc/${pid}/cgroup`, "utf8").includes(containerId)) continue
      status = readFileSync(`/proc/${pid}/status`, "utf8")
      command = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim()
    } catch {
      continue // the process exited while it was looked at
    }
    const field = (name: string) => {
      const hex = new RegExp(`^${name}:\\s*([0-9a-f]+)$`, "m").exec(status)?.[1]
      if (hex === undefined) throw new Error(`/proc/${pid}/status has no ${name}`)
      return BigInt(`0x${hex}`)
    }
    found.push({ command, effective: field("CapEff"), permitted: field("CapPrm"), bounding: field("CapBnd") })
  }
  return found
}
/** linux/capability.h */
const CAP_PERFMON = 38n
const CAP_BPF = 39n

/** obs' query API, from this host to the obs pod's IP (the host routes to pods over the CNI bridge). */
const obs = async <A>(path: string): Promise<{ status: number; body: A }> => {
  const [pod] = await pods("iii-system", "app.kubernetes.io/name=iii-obs")
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
const startLoad = async (name: string, count: number, slowMs = 0) => {
  await kubectl("-n", namespace, "delete", "pod", name, "--ignore-not-found", "--wait")
  await kubectl(
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
/**
 * Waits until auth has as many pods as its Deployment asks, each Ready and answering on its own IP. The
 * rendered Deployments have no readiness probe, so a pod the HPA just added joins the Service when its
 * container starts, before the app listens: a request routed to it then is refused (seen once, with the
 * load generator started while the HPA's sixth pod was starting).
 */
const authServing = () =>
  eventually("every auth pod to answer", 120, async () => {
    const deployment = await kubectlJson<{ spec: { replicas: number } }>(
      ...["-n", namespace, "get", "deployment", `${composition}-auth`]
    )
    const auth = await pods(namespace, "iii.io/component=auth")
    if (auth.length !== deployment.spec.replicas || !auth.every(isReady)) return undefined
    for (const pod of auth) {
      const response = await fetch(`http://${pod.status.podIP}:8080/healthz`, {
        signal: AbortSignal.timeout(5_000)
      })
      if (response.status !== 200) return undefined
    }
    return auth
  })

const loadResult = async (name: string, seconds: number) => {
  await eventually(`load generator ${name} to finish`, seconds, async () => {
    const phase = (await kubectlJson<Pod>("-n", namespace, "get", "pod", name)).status.phase
    if (phase === "Failed") throw new Error(`${name} failed: ${await kubectl("-n", namespace, "logs", name)}`)
    return phase === "Succeeded" ? true : undefined
  })
  const line = (await kubectl("-n", namespace, "logs", name))
    .split("\n")
    .find((l) => l.startsWith('{"result"'))
  return (JSON.parse(line ?? "null") as { result: { ok: number; failed: number; traceIds: Array<string> } })
    .result
}

const diagnose = async () => {
  const logs = (ns: string, selector: string) => [
    "-n",
    ns,
    "logs",
    "-l",
    selector,
    "--tail=30",
    "--all-containers",
    "--prefix"
  ]
  for (const args of [
    ["get", "pods", "-A", "-o", "wide"],
    ["get", "events", "-A", "--sort-by=.lastTimestamp"],
    logs("iii-system", "app.kubernetes.io/part-of=iii"),
    logs("iii-node-agent", "app.kubernetes.io/name=iii-agent"),
    logs(namespace, `iii.io/composition=${composition}`)
  ])
    console.log(`--- kubectl ${args.join(" ")}\n${await run("kubectl", args).catch(String)}`)
}

describe.skipIf(skipReason !== undefined)("iii on a one-node Kubernetes cluster", () => {
  const archives = mkdtempSync(join(tmpdir(), "iii-e2e-images-"))
  let digests = ""
  /** Traces seen complete before obs is restarted, with their span counts. */
  const stored = new Map<string, number>()

  beforeAll(async () => {
    // A fresh cluster each run: nothing left from an earlier one (binaries and certificates stay cached).
    await timed("cluster reset", () => run("bash", ["scripts/cluster.sh", "reset"]))
    await timed("cluster start (builds Kubernetes the first time)", () =>
      run("bash", ["scripts/cluster.sh", "start"])
    )
    digests = await timed("images (npm run images -- --demo)", () =>
      run("bash", ["scripts/images.sh", "--demo", "--save", archives])
    )
    console.log(digests)
    const tars = readdirSync(archives).map((f) => join(archives, f))
    await timed("image import", () => run("bash", ["scripts/cluster.sh", "import", ...tars]))
    const volume = `${state}/volumes/iii-obs-0`
    mkdirSync(volume, { recursive: true })
    chownSync(volume, 65532, 65532)
    await timed("install (scripts/kube-install.sh)", () =>
      run("bash", ["scripts/kube-install.sh", "--images", "localhost", "--kustomization", "e2e/overlay"])
    )
  })

  afterEach(async (context) => {
    if (context.task.result?.state === "fail") await diagnose()
  })

  afterAll(async () => {
    rmSync(archives, { recursive: true, force: true })
    await timed("cluster stop", () => run("bash", ["scripts/cluster.sh", "stop"]))
    console.log(`e2e timings:\n  ${timings.join("\n  ")}`)
  })

  it("builds reproducible images: a second build of the commit gives the same digests", async () => {
    const again = await timed("images, second build", () => run("bash", ["scripts/images.sh", "--demo"]))
    const digestLines = (table: string) => table.split("\n").filter((l) => l.includes("sha256:"))
    expect(digestLines(digests)).toHaveLength(4)
    expect(digestLines(again)).toEqual(digestLines(digests))
    const labels = JSON.parse(
      await run("podman", ["image", "inspect", "--format", "{{json .Labels}}", image("iii")])
    ) as Record<string, string>
    expect(labels).toMatchObject({
      "org.opencontainers.image.version": version,
      "org.opencontainers.image.revision": expect.stringMatching(/^[0-9a-f]{40}(-dirty)?$/),
      "org.opencontainers.image.source": expect.stringMatching(/^https:\/\//)
    })
  })

  it("installs iii: two controllers with one leader, obs on its volume, the External Metrics API, restricted Pod Security", async () => {
    const controllers = await pods("iii-system", "app.kubernetes.io/name=iii-controller")
    expect(controllers.filter(isReady)).toHaveLength(2)
    const lease = await kubectlJson<{ spec: { holderIdentity?: string } }>(
      ...["-n", "iii-system", "get", "lease", "iii-controller"]
    )
    // The holder identity is the pod's name and a suffix of its own.
    const leaders = controllers.filter((p) => lease.spec.holderIdentity?.startsWith(`${p.metadata.name}-`))
    expect(leaders).toHaveLength(1)
    const [obsPod] = await pods("iii-system", "app.kubernetes.io/name=iii-obs")
    expect(obsPod !== undefined && isReady(obsPod)).toBe(true)
    const claim = await kubectlJson<{ status: { phase: string }; spec: { volumeName: string } }>(
      ...["-n", "iii-system", "get", "pvc", "data-iii-obs-0"]
    )
    expect(claim).toMatchObject({ status: { phase: "Bound" }, spec: { volumeName: "iii-e2e-obs-0" } })
    const apiService = await kubectlJson<{
      status: { conditions: ReadonlyArray<{ type: string; status: string }> }
    }>(...["get", "apiservice", "v1beta1.external.metrics.k8s.io"])
    expect(apiService.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Available", status: "True" })
    )
    // The namespace enforces `restricted`, so running pods passed it; and they run as they should.
    const ns = await kubectlJson<{ metadata: Meta }>("get", "namespace", "iii-system")
    expect(ns.metadata.labels?.["pod-security.kubernetes.io/enforce"]).toBe("restricted")
    for (const pod of [...controllers, ...(obsPod === undefined ? [] : [obsPod])]) {
      expect(pod.spec.securityContext?.runAsUser).toBe(65532)
      expect(pod.spec.containers[0]?.securityContext?.readOnlyRootFilesystem).toBe(true)
    }
    // The image as the node has it answers `iii --version` (a pod of its own: an exec into the controller
    // would start a second Node.js inside its memory limit).
    await kubectl(
      ...["run", "iii-version", `--image=${image("iii")}`, "--restart=Never", "--image-pull-policy=Never"],
      ...["--", "--version"]
    )
    await eventually("iii --version to finish", 60, async () =>
      (await kubectlJson<Pod>("get", "pod", "iii-version")).status.phase === "Succeeded" ? true : undefined
    )
    expect((await kubectl("logs", "iii-version")).trim()).toBe(version)
    await kubectl("delete", "pod", "iii-version", "--wait=false")
  })

  it("runs the node agent: one DaemonSet pod, Ready, whose processes hold BPF and PERFMON and no other capability", async () => {
    const nodes = await kubectlJson<List<{ metadata: Meta }>>("get", "nodes")
    const daemonSet = await kubectlJson<{
      status: { desiredNumberScheduled: number; numberReady: number }
    }>(...["-n", "iii-node-agent", "get", "daemonset", "iii-agent"])
    expect(daemonSet.status).toMatchObject({ desiredNumberScheduled: nodes.items.length, numberReady: 1 })
    const [agent, ...others] = await agentPods()
    expect(others).toHaveLength(0)
    if (agent === undefined) throw new Error("no agent pod")
    expect(isReady(agent)).toBe(true)
    expect(agent.spec.nodeName).toBe(nodes.items[0]?.metadata.name)
    // As the manifest asks: no host pid or network namespace, no privilege, every capability dropped but two.
    expect(agent.spec.hostPID ?? false).toBe(false)
    expect(agent.spec.hostNetwork ?? false).toBe(false)
    const [container] = agent.spec.containers
    expect(container?.securityContext).toMatchObject({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["BPF", "PERFMON"] }
    })
    // And as the kernel runs it: every process of the container has exactly BPF and PERFMON, effective,
    // permitted and in its bounding set, and still loaded and attached the capture (its start-up line).
    const containerId = agent.status.containerStatuses?.[0]?.containerID?.replace(/^\w+:\/\//, "") ?? ""
    expect(containerId).toMatch(/^[0-9a-f]{64}$/)
    const processes = processCapabilities(containerId)
    expect(processes.map((p) => p.command)).toContainEqual(expect.stringMatching(/ agent --node$/))
    const only = (1n << CAP_BPF) | (1n << CAP_PERFMON)
    for (const p of processes) expect(p).toMatchObject({ effective: only, permitted: only, bounding: only })
    const started = await eventually("the agent's start-up line", 60, async () => {
      const logs = await kubectl("-n", "iii-node-agent", "logs", agent.metadata.name)
      return logs.includes("node mode: pods of node") ? logs : undefined
    })
    expect(started).toContain(`node mode: pods of node ${agent.spec.nodeName}`)
  })

  it("reconciles the seed composition: Deployments, Services and the HPA, Ready when its pods are", async () => {
    const seed = parse(readFileSync(join(repo, "manifests/examples/user-service.yaml"), "utf8")) as {
      metadata: { namespace?: string }
      spec: { components: Array<{ name: string; image: string }> }
    }
    seed.metadata.namespace = namespace
    for (const c of seed.spec.components) c.image = image(`iii-demo-${c.name}`)
    await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } })
    // Its Ready condition at every version of the composition, from before it exists.
    const readyAtEachVersion = watch(
      ...["-n", namespace, "servicecompositions"],
      ...["-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}{"\\n"}`]
    )
    await apply(seed)

    interface Status {
      readonly status?: {
        readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>
        readonly components?: ReadonlyArray<{ name: string; desiredReplicas: number; readyReplicas: number }>
      }
    }
    const ready = await eventually("the composition to be Ready", 240, () =>
      readyAtEachVersion.lines.includes("True")
        ? kubectlJson<Status>("-n", namespace, "get", "servicecomposition", composition)
        : undefined
    ).finally(readyAtEachVersion.stop)
    // Not Ready while its pods were starting; Ready once every component's pods are.
    const readiness = readyAtEachVersion.lines.filter((v) => v !== "").filter((v, i, all) => v !== all[i - 1])
    expect(readiness).toEqual(["False", "True"])
    for (const component of ready.status?.components ?? [])
      expect(component.readyReplicas).toBe(component.desiredReplicas)

    const children = async (kind: string) =>
      (
        await kubectlJson<List<{ metadata: Meta }>>(
          ...["-n", namespace, "get", kind, "-l", `iii.io/composition=${composition}`]
        )
      ).items
        .map((o) => o.metadata.name)
        .sort()
    expect(await children("deployments")).toEqual([`${composition}-auth`, `${composition}-profile`])
    expect(await children("services")).toEqual([`${composition}-auth`, `${composition}-profile`])
    expect(await children("hpa")).toEqual([`${composition}-auth`])
    // The HPA brings auth to its minimum of 3 replicas.
    const auth = await eventually("auth at 3 ready replicas", 180, async () => {
      const ready = (await pods(namespace, "iii.io/component=auth")).filter(isReady)
      return ready.length >= 3 ? ready : undefined
    })
    // The controller (agentMode node) labelled the pods and injected nothing: one container each, the app's.
    const all = [...auth, ...(await pods(namespace, "iii.io/component=profile"))]
    for (const pod of all) {
      const component = pod.metadata.labels?.["iii.io/component"]
      expect(pod.metadata.labels?.["iii.io/composition"]).toBe(composition)
      expect(pod.metadata.annotations?.["iii.io/agent"]).toBe("node")
      expect(pod.spec.initContainers ?? []).toEqual([])
      expect(pod.spec.containers.map((c) => c.name)).toEqual([component])
      expect(pod.spec.shareProcessNamespace ?? false).toBe(false)
    }
    // The node agent traces each pod once it finds its containers' cgroups (within 2 s of their start).
    // A request straight to each pod, until obs has its span.
    for (const pod of all) {
      const path =
        pod.metadata.labels?.["iii.io/component"] === "auth" ? "/login?user=probe" : "/profile/probe"
      await eventually(`${pod.metadata.name} traced`, 60, async () => {
        const traceId = randomBytes(16).toString("hex")
        await fetch(`http://${pod.status.podIP}:8080${path}`, {
          headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` },
          signal: AbortSignal.timeout(5_000)
        })
        await sleep(2_000)
        return (await trace(traceId)).some((s) => s.pod === pod.metadata.name && s.kind === "server")
          ? true
          : undefined
      })
    }
  })

  it("turns in-cluster traffic to auth into spans labelled with composition, component and pod, one trace from auth to profile, with the pods' logs", async () => {
    await startLoad("load-traces", 60)
    const result = await loadResult("load-traces", 180)
    expect(result).toMatchObject({ ok: 60, failed: 0 })
    const names = async (component: string) =>
      (await pods(namespace, `iii.io/component=${component}`)).map((p) => p.metadata.name)
    const authPods = await names("auth")
    const profilePods = await names("profile")
    const [agent] = await agentPods()
    const node = agent?.spec.nodeName
    expect(node).toBeDefined()

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
        expect(span).toMatchObject({ traceId, composition, namespace, component: span.service })
        expect(span.service === "auth" ? authPods : profilePods).toContain(span.pod)
        // The node agent's identity of the pod: its node and the container the span came from.
        expect(span.attributes).toMatchObject({ "k8s.node.name": node, "k8s.container.name": span.service })
      }
      const authServer = spans.find((s) => s.service === "auth" && s.kind === "server")
      const authClient = spans.find((s) => s.service === "auth" && s.kind === "client")
      expect(authClient?.name).toMatch(/^GET \/profile\//)
      expect(spans.find((s) => s.service === "profile" && s.kind === "server")?.http?.statusCode).toBe(200)
      // auth called profile while it served the request, in one process: the client span lies within the
      // server span (both from the kernel's monotonic clock, converted to unix time with one offset).
      if (authServer === undefined || authClient === undefined) throw new Error("auth's spans")
      expect(interval(authClient).start).toBeGreaterThanOrEqual(interval(authServer).start)
      expect(interval(authClient).end).toBeLessThanOrEqual(interval(authServer).end)
    }

    const [first] = result.traceIds
    const correlated = await eventually("the trace's log lines", 60, async () => {
      const { status, body } = await obs<{ logs: ReadonlyArray<LogRecord> }>(`/v1/correlate/${first}`)
      const logs = status === 200 ? body.logs : []
      return logs.some((l) => l.service === "auth") && logs.some((l) => l.service === "profile")
        ? logs
        : undefined
    })
    // Each line is one the kubelet wrote to the pod's CRI log file, which the node agent read: the same
    // text at the same timestamp as `kubectl logs --timestamps` (the kubelet reading that file) shows.
    const kubeletLogs = new Map<string, string>()
    for (const line of correlated) {
      expect(line.traceId).toBe(first)
      expect(line.service === "auth" ? authPods : profilePods).toContain(line.pod)
      expect(line).toMatchObject({ stream: "stdout" })
      expect(line.attributes).toMatchObject({ "k8s.node.name": node, "k8s.container.name": line.service })
      const pod = line.pod ?? ""
      if (!kubeletLogs.has(pod))
        kubeletLogs.set(pod, await kubectl("-n", namespace, "logs", pod, "--timestamps"))
      const written = (kubeletLogs.get(pod) ?? "")
        .split("\n")
        .map((l) => ({ time: l.slice(0, l.indexOf(" ")), text: l.slice(l.indexOf(" ") + 1) }))
        .filter((l) => l.text === line.body)
      expect(written.map((l) => unixNano(l.time))).toEqual([BigInt(line.timeUnixNano)])
    }
    const bodies = correlated.map((l) => l.body)
    expect(bodies.some((b) => b.includes(" logged in"))).toBe(true)
    expect(bodies.some((b) => b.includes("profile of user-"))).toBe(true)
  })

  it("serves iii_p99_latency_ms to the HPA through the aggregator, and a slow auth scales it up", async () => {
    const quantity = (q: string | undefined) =>
      q === undefined ? Number.NaN : q.endsWith("m") ? Number(q.slice(0, -1)) / 1000 : Number(q)
    const selector = encodeURIComponent(`iii.io/composition=${composition},iii.io/component=auth`)
    const path = `/apis/external.metrics.k8s.io/v1beta1/namespaces/${namespace}/iii_p99_latency_ms?labelSelector=${selector}`
    const metric = JSON.parse(await kubectl("get", "--raw", path)) as {
      items: ReadonlyArray<{ metricName: string; value: string }>
    }
    expect(metric.items[0]?.metricName).toBe("iii_p99_latency_ms")
    expect(quantity(metric.items[0]?.value)).toBeGreaterThanOrEqual(0)

    interface Hpa {
      readonly status: {
        readonly currentReplicas: number
        readonly desiredReplicas: number
        readonly currentMetrics?: ReadonlyArray<{
          readonly external?: { readonly current: { readonly value?: string } }
        }>
      }
    }
    const hpa = async () =>
      (await kubectlJson<Hpa>("-n", namespace, "get", "hpa", `${composition}-auth`)).status
    const currentP99 = (status: Hpa["status"]) =>
      quantity(status.currentMetrics?.[0]?.external?.current.value)
    // The HPA controller reads the metric too (kube-controller-manager, through the same aggregator).
    const before = await eventually("the HPA to read the metric", 120, async () => {
      const status = await hpa()
      return Number.isNaN(currentP99(status)) ? undefined : status
    })
    // Every request now waits 400 ms in auth: p99 ~400 ms against a 200 ms target.
    await startLoad("load-slow", 1200, 400)
    const scaled = await eventually("the HPA to scale auth up", 240, async () => {
      const status = await hpa()
      return currentP99(status) > 200 && status.desiredReplicas > before.currentReplicas ? status : undefined
    })
    await eventually("auth's Deployment to follow", 60, async () => {
      const deployment = await kubectlJson<{ spec: { replicas: number } }>(
        ...["-n", namespace, "get", "deployment", `${composition}-auth`]
      )
      return deployment.spec.replicas >= scaled.desiredReplicas ? true : undefined
    })
    console.log(
      `e2e: p99 ${currentP99(before)} ms -> ${currentP99(scaled)} ms; auth ${before.currentReplicas} -> ${scaled.desiredReplicas} replicas`
    )
    await kubectl("-n", namespace, "delete", "pod", "load-slow", "--wait=false")
  })

  it("loses no acknowledged span when the obs pod is deleted: the StatefulSet brings it back on its volume", async () => {
    expect(stored.size).toBeGreaterThan(0)
    const [before] = await pods("iii-system", "app.kubernetes.io/name=iii-obs")
    await kubectl("-n", "iii-system", "delete", "pod", "iii-obs-0", "--wait")
    await eventually("obs to be Ready again", 180, async () => {
      const [pod] = await pods("iii-system", "app.kubernetes.io/name=iii-obs")
      return pod !== undefined && isReady(pod) && pod.metadata.uid !== before?.metadata.uid ? pod : undefined
    })
    for (const [traceId, count] of stored) expect((await trace(traceId)).length).toBe(count)
    // The node agent reconnects on its own: new traffic is traced again (once auth has settled after
    // the HPA's scale-up).
    await authServing()
    await startLoad("load-after-restart", 20)
    const [traceId = ""] = (await loadResult("load-after-restart", 180)).traceIds
    await eventually("a trace sent after the restart", 120, async () =>
      (await trace(traceId)).length >= 3 ? true : undefined
    )
  })

  it("removes everything the composition created when it is deleted", async () => {
    await kubectl("-n", namespace, "delete", "servicecomposition", composition, "--wait")
    await eventually("the composition's objects and pods to be gone", 180, async () => {
      const left = await kubectl(
        ...["-n", namespace, "get", "deployments,replicasets,services,hpa,pods"],
        ...["-l", `iii.io/composition=${composition}`, "-o", "name"]
      )
      return left.trim() === "" ? true : undefined
    })
  })
})
