/**
 * The node agent (issue #12) on a "node" made of this machine: a real kube-apiserver + etcd holding
 * the Pod objects, cgroup v2 directories named the way the kubelet's systemd driver names them (one
 * per container, containerd's and CRI-O's container names), real HTTP servers moved into them, CRI
 * log files under a temporary pods-log directory, a real obs node (and a fake one beside it, which
 * counts every log record it gets). Real eBPF: root, BTF, the addon built, a writable cgroup v2
 * mount and the envtest binaries; skipped with the reason otherwise. Every cgroup directory the test
 * makes is removed afterwards.
 */
import { type ChildProcess, spawn } from "node:child_process"
import {
  accessSync,
  appendFileSync,
  constants,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmdirSync,
  rmSync,
  writeFileSync
} from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { KubeClient } from "@iii/controller"
import type { Telemetry } from "@iii/core"
import { ObsNode } from "@iii/obs"
import { Context, Effect, Either, Exit, Layer, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as Envtest from "../../../controller/test/support/Envtest.js"
import * as Agent from "../../src/Agent.js"
import * as EbpfCapture from "../../src/EbpfCapture.js"
import * as Exporter from "../../src/Exporter.js"
import { findCgroup2Mount } from "../../src/internal/CgroupTree.js"
import { FakeObs, until } from "../support/FakeObs.js"

const availability = Effect.runSync(EbpfCapture.isAvailable)
const cgroupMount = findCgroup2Mount()
const writable = (path: string | undefined) => {
  try {
    if (path === undefined) return false
    accessSync(path, constants.W_OK)
    return true
  } catch {
    return false
  }
}
const skipReason = !availability.available
  ? availability.reasons.join("; ")
  : !writable(cgroupMount)
    ? "no writable cgroup v2 mount"
    : Either.isLeft(Envtest.findBinaries())
      ? Either.getLeft(Envtest.findBinaries()).pipe((reason) => String(reason))
      : undefined
if (skipReason !== undefined) console.warn(`node agent test skipped: ${skipReason}`)

const server = fileURLToPath(new URL("../fixtures/pod-server.mjs", import.meta.url))
const nodeName = "node-under-test"
const namespace = "shop"

interface TestPod {
  readonly name: string
  uid: string
  readonly containerId: string
  /** cgroup directory of the container, relative to the node's cgroup root (systemd driver). */
  cgroup: string
  logFile: string
  port: number
  process: ChildProcess | undefined
}

const hex64 = () =>
  Array.from({ length: 64 }, () => "0123456789abcdef"[Math.floor(Math.random() * 16)] ?? "0").join("")

describe.skipIf(skipReason !== undefined)("node agent (real eBPF, kube-apiserver, cgroups, CRI logs)", () => {
  const scope = Effect.runSync(Scope.make())
  const work = mkdtempSync(join(tmpdir(), "iii-node-agent-"))
  const podLogs = join(work, "pods")
  const stateDir = join(work, "state")
  // The node's cgroup root: a directory of its own in the real cgroup v2 tree, as a kubelet
  // `--cgroup-root` would be (this machine may run a real kubelet under the mount's root).
  const cgroupRoot = join(cgroupMount ?? "/nonexistent", `iii-node-test-${process.pid}`)
  const fake = new FakeObs()
  let obsUrl = ""
  let fakeUrl = ""
  let kubeconfig = ""
  let kube: KubeClient.KubeClient["Type"]
  let agentScope: Scope.CloseableScope | undefined
  let agent: Agent.AgentService | undefined
  const pods = new Map<string, TestPod>()

  const request = <A>(options: KubeClient.RequestOptions) => Effect.runPromise(kube.request<A>(options))

  /** Creates the Pod object (the API server gives its UID), its cgroup and log directory, its server. */
  const createPod = async (
    name: string,
    options: {
      labels?: Record<string, string>
      annotations?: Record<string, string>
      qos: "Burstable" | "BestEffort" | "Guaranteed"
      runtime: "containerd" | "cri-o"
    }
  ): Promise<TestPod> => {
    const resources =
      options.qos === "BestEffort"
        ? {}
        : options.qos === "Guaranteed"
          ? { requests: { cpu: "10m", memory: "16Mi" }, limits: { cpu: "10m", memory: "16Mi" } }
          : { requests: { cpu: "10m" } }
    const created = await request<{ metadata: { uid: string } }>({
      method: "POST",
      path: `/api/v1/namespaces/${namespace}/pods`,
      body: {
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace, labels: options.labels ?? {}, annotations: options.annotations ?? {} },
        spec: { nodeName, containers: [{ name: "app", image: "registry.test/app:1", resources }] }
      }
    })
    const uid = created.metadata.uid
    const containerId = hex64()
    const slice = uid.replaceAll("-", "_")
    const level = options.qos === "Guaranteed" ? "" : `kubepods-${options.qos.toLowerCase()}.slice/`
    const podSlice =
      options.qos === "Guaranteed"
        ? `kubepods-pod${slice}.slice`
        : `kubepods-${options.qos.toLowerCase()}-pod${slice}.slice`
    const scopeName =
      options.runtime === "containerd" ? `cri-containerd-${containerId}.scope` : `crio-${containerId}.scope`
    const cgroup = `kubepods.slice/${level}${podSlice}/${scopeName}`
    mkdirSync(join(cgroupRoot, cgroup), { recursive: true })
    const logDir = join(podLogs, `${namespace}_${name}_${uid}`, "app")
    mkdirSync(logDir, { recursive: true })
    const logFile = join(logDir, "0.log")
    writeFileSync(logFile, "")
    const child = spawn(process.execPath, [server, logFile, name], { stdio: ["ignore", "pipe", "inherit"] })
    const port = await new Promise<number>((resolve) =>
      createInterface({ input: child.stdout }).on("line", (line) => {
        const match = /^listening (\d+)$/.exec(line)
        if (match !== null) resolve(Number(match[1]))
      })
    )
    // Into the container's cgroup, as the runtime would start it there.
    writeFileSync(join(cgroupRoot, cgroup, "cgroup.procs"), String(child.pid))
    const pod = { name, uid, containerId, cgroup, logFile, port, process: child }
    pods.set(name, pod)
    return pod
  }

  /** What the kubelet reports once the container runs: its ID (and the runtime's prefix). */
  const markRunning = async (pod: TestPod, runtime: "containerd" | "cri-o") => {
    const current = await request<Record<string, unknown>>({
      method: "GET",
      path: `/api/v1/namespaces/${namespace}/pods/${pod.name}`
    })
    await request({
      method: "PUT",
      path: `/api/v1/namespaces/${namespace}/pods/${pod.name}/status`,
      body: {
        ...current,
        status: {
          ...(current.status as object),
          phase: "Running",
          containerStatuses: [
            {
              name: "app",
              image: "registry.test/app:1",
              imageID: "",
              ready: true,
              restartCount: 0,
              containerID: `${runtime === "containerd" ? "containerd" : "cri-o"}://${pod.containerId}`,
              state: { running: { startedAt: new Date().toISOString() } }
            }
          ]
        }
      }
    })
  }

  const send = (pod: TestPod, correlationId: string) =>
    fetch(`http://127.0.0.1:${pod.port}/orders/${correlationId}`, {
      headers: { "x-iii-correlation-id": correlationId }
    }).then((response) => response.text())

  const startAgent = async () => {
    agentScope = Effect.runSync(Scope.make())
    const layer = Agent.layer({
      identity: { service: "iii-agent", node: nodeName },
      node: { nodeName, kubeconfig, cgroupRoot, podLogs, stateDir, pollIntervalMs: 100 },
      statsIntervalMs: 3_600_000
    }).pipe(
      Layer.provide(
        Exporter.layer({
          urls: [obsUrl, fakeUrl],
          agent: { id: Exporter.newAgentId(), service: "iii-agent" },
          flushIntervalMs: 200
        })
      )
    )
    const context = await Effect.runPromise(Layer.buildWithScope(layer, agentScope))
    agent = Context.get(context, Agent.Agent)
  }

  const stopAgent = async () => {
    if (agentScope !== undefined) await Effect.runPromise(Scope.close(agentScope, Exit.void))
    agentScope = undefined
  }

  const spansOf = (pod: TestPod) => fake.spans.filter((span) => span.pod === pod.name)

  beforeAll(async () => {
    const env = await Effect.runPromise(Scope.extend(Envtest.start(), scope))
    kubeconfig = join(work, "kubeconfig")
    writeFileSync(kubeconfig, env.kubeconfig(env.admin))
    kube = await Effect.runPromise(
      Scope.extend(
        Effect.map(Layer.build(KubeClient.layer({ kubeconfigText: env.kubeconfig(env.admin) })), (c) =>
          Context.get(c, KubeClient.KubeClient)
        ),
        scope
      )
    )
    await request({
      method: "POST",
      path: "/api/v1/namespaces",
      body: { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }
    })
    const obs = await Effect.runPromise(
      Layer.buildWithScope(
        ObsNode.layer(ObsNode.makeConfig(join(work, "obs"), { port: 0, host: "127.0.0.1" })),
        scope
      )
    )
    obsUrl = Context.get(obs, ObsNode.ObsNode).url
    fakeUrl = await fake.start()
    mkdirSync(cgroupRoot)
  }, 120_000)

  afterAll(async () => {
    await stopAgent()
    for (const pod of pods.values()) pod.process?.kill("SIGKILL")
    await Promise.all(
      [...pods.values()].map(
        (pod) =>
          new Promise<void>((resolve) => {
            if (pod.process === undefined || pod.process.exitCode !== null || pod.process.signalCode !== null)
              return resolve()
            pod.process.once("exit", () => resolve())
          })
      )
    )
    // Every cgroup directory, deepest first (a cgroup is removed with rmdir, its files with it).
    const removeTree = (dir: string) => {
      for (const entry of readdirSync(dir, { withFileTypes: true }))
        if (entry.isDirectory()) removeTree(join(dir, entry.name))
      rmdirSync(dir)
    }
    removeTree(cgroupRoot)
    await fake.stop()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    rmSync(work, { recursive: true, force: true })
  }, 60_000)

  it("traces exactly the labelled pods, each span and log line with its own pod's identity, into a real obs", async () => {
    const cart = await createPod("cart-7d9f", {
      labels: { "iii.io/composition": "shop", "iii.io/component": "cart" },
      qos: "Burstable",
      runtime: "containerd"
    })
    const plain = await createPod("plain-5c2a", { qos: "BestEffort", runtime: "containerd" })
    const auth = await createPod("auth-6b1e", {
      annotations: { "iii.io/trace": "true" },
      labels: { "app.kubernetes.io/name": "auth" },
      qos: "Guaranteed",
      runtime: "cri-o"
    })
    await markRunning(cart, "containerd")
    await markRunning(plain, "containerd")
    await markRunning(auth, "cri-o")
    // Lines the runtime wrote before the agent started: read from the start of the file.
    appendFileSync(
      auth.logFile,
      `${new Date().toISOString()} stdout F {"level":"warn","msg":"booted","correlationId":"auth-boot"}\n`
    )
    await startAgent()
    await until(
      "spans of both labelled pods",
      () => {
        void send(cart, `cart-${Date.now()}`)
        void send(auth, `auth-${Date.now()}`)
        void send(plain, `plain-${Date.now()}`)
        return spansOf(cart).length > 0 && spansOf(auth).length > 0
      },
      20_000
    )
    for (let i = 0; i < 5; i++) {
      await send(cart, `cart-req-${i}`)
      await send(auth, `auth-req-${i}`)
      await send(plain, `plain-req-${i}`)
    }
    await until(
      "every request's span",
      () =>
        spansOf(cart).some((s) => s.correlationId === "cart-req-4") &&
        spansOf(auth).some((s) => s.correlationId === "auth-req-4")
    )
    expect(spansOf(plain)).toEqual([])
    const identity = (item: {
      service: string
      pod?: string | undefined
      namespace?: string | undefined
      component?: string | undefined
      composition?: string | undefined
      attributes?: Telemetry.Attributes | undefined
    }) => ({
      service: item.service,
      namespace: item.namespace,
      pod: item.pod,
      component: item.component,
      composition: item.composition,
      container: item.attributes?.["k8s.container.name"],
      node: item.attributes?.["k8s.node.name"]
    })
    const cartIdentity = {
      service: "cart",
      namespace,
      pod: cart.name,
      component: "cart",
      composition: "shop",
      container: "app",
      node: nodeName
    }
    const authIdentity = {
      service: "auth",
      namespace,
      pod: auth.name,
      component: undefined,
      composition: undefined,
      container: "app",
      node: nodeName
    }
    expect(new Set(spansOf(cart).map((s) => JSON.stringify(identity(s))))).toEqual(
      new Set([JSON.stringify(cartIdentity)])
    )
    expect(new Set(spansOf(auth).map((s) => JSON.stringify(identity(s))))).toEqual(
      new Set([JSON.stringify(authIdentity)])
    )
    // Logs come from the CRI files, labelled with their pod, parsed (level, correlation id).
    await until(
      "the log lines",
      () =>
        fake.logs.some((l) => l.correlationId === "cart-req-4") &&
        fake.logs.some((l) => l.correlationId === "auth-boot")
    )
    const cartLog = fake.logs.find((l) => l.correlationId === "cart-req-4")
    expect(cartLog === undefined ? undefined : identity(cartLog)).toEqual(cartIdentity)
    expect(fake.logs.find((l) => l.correlationId === "auth-boot")).toMatchObject({
      level: "warn",
      pod: auth.name
    })
    expect(fake.logs.filter((l) => l.pod === plain.name)).toEqual([])
    // The same spans reached the real obs node (its commit may come after the fake obs had them).
    let correlated: ReadonlyArray<Telemetry.Span> = []
    await until("the real obs to have the span", () => {
      void fetch(`${obsUrl}/v1/correlate/cart-req-3`)
        .then(
          (response) =>
            response.json() as Promise<{ traces?: ReadonlyArray<{ spans: ReadonlyArray<Telemetry.Span> }> }>
        )
        .then((body) => {
          correlated = body.traces?.flatMap((t) => t.spans) ?? []
        })
      return correlated.length > 0
    })
    expect(correlated.map((s) => [s.pod, s.http?.path])).toEqual([[cart.name, "/orders/cart-req-3"]])
  }, 90_000)

  it("picks up a new pod within 2 s of its container starting", async () => {
    const orders = await createPod("orders-1a2b", {
      labels: { "iii.io/composition": "shop", "iii.io/component": "orders" },
      qos: "Burstable",
      runtime: "containerd"
    })
    const started = Date.now()
    await markRunning(orders, "containerd")
    const sent = new Map<string, number>()
    let n = 0
    await until(
      "the new pod's first span",
      () => {
        const id = `orders-${n++}`
        sent.set(id, Date.now())
        void send(orders, id)
        return spansOf(orders).length > 0
      },
      10_000
    )
    const first = Math.min(
      ...spansOf(orders).map((s) => sent.get(s.correlationId) ?? Number.POSITIVE_INFINITY)
    )
    console.log(`new pod traced ${first - started} ms after its status said running`)
    expect(first - started).toBeLessThanOrEqual(2000)
  }, 30_000)

  it("forgets a deleted pod: its cgroup leaves the map", async () => {
    const cart = pods.get("cart-7d9f")
    if (cart === undefined) throw new Error("no cart pod")
    await request({
      method: "DELETE",
      path: `/api/v1/namespaces/${namespace}/pods/${cart.name}`,
      query: { gracePeriodSeconds: "0" }
    })
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const before = spansOf(cart).length
    for (let i = 0; i < 5; i++) await send(cart, `cart-after-${i}`)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect(spansOf(cart).length).toBe(before)
    const stats = await Effect.runPromise(agent?.stats ?? Effect.die("no agent"))
    expect(stats.node).toMatchObject({ pods: 2, unlocated: 0 })
  }, 30_000)

  it("survives its own restart without losing or repeating a log line", async () => {
    const auth = pods.get("auth-6b1e")
    if (auth === undefined) throw new Error("no auth pod")
    const line = (id: string) =>
      appendFileSync(
        auth.logFile,
        `${new Date().toISOString()} stdout F {"msg":"restart","correlationId":"${id}"}\n`
      )
    for (let i = 0; i < 5; i++) line(`before-${i}`)
    await until("the lines before the restart", () => fake.logs.some((l) => l.correlationId === "before-4"))
    await stopAgent()
    // Written while no agent runs, one of them split by the runtime into a partial line and its end.
    for (let i = 0; i < 5; i++) line(`down-${i}`)
    appendFileSync(auth.logFile, `${new Date().toISOString()} stdout P {"msg":"restart","correl`)
    appendFileSync(auth.logFile, `\n${new Date().toISOString()} stdout F ationId":"down-split"}\n`)
    await startAgent()
    for (let i = 0; i < 5; i++) line(`after-${i}`)
    await until("the lines after the restart", () => fake.logs.some((l) => l.correlationId === "after-4"))
    const ids = [
      "auth-boot",
      ...["before", "down", "after"].flatMap((phase) => Array.from({ length: 5 }, (_, i) => `${phase}-${i}`)),
      "down-split"
    ]
    const counts = ids.map((id) => [id, fake.logs.filter((l) => l.correlationId === id).length])
    expect(counts).toEqual(ids.map((id) => [id, 1]))
    // And it traces the pods it found again, from the API and the cgroup tree.
    await send(auth, "auth-after-restart")
    await until("a span after the restart", () =>
      spansOf(auth).some((s) => s.correlationId === "auth-after-restart")
    )
  }, 60_000)
})
