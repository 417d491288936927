/**
 * The controller under a burst: N compositions (2 components each: one autoscaled on p99 latency, one
 * plain) created at once against a real kube-apiserver + etcd (Envtest), the controller running
 * in a child process (bench/controller-child.ts) as the least-privileged service account of
 * manifests/controller/rbac.yaml.
 *
 *   npm run bench:controller            (builds packages/controller, then runs this with Node 24)
 *   COMPOSITIONS=100 npm run bench:controller
 *
 * Prints: time until every composition has its children applied and its status written; API requests
 * per composition (controller's requests during the burst / N, list+watch included); writes made by a
 * full resync with nothing changed (steady state, should be 0); the process RSS.
 * Targets (issue 6): ≤ 60 s, ≤ 12 requests per composition, 0 steady-state writes, RSS ≤ 250 MB.
 * Needs the binaries of scripts/envtest.sh.
 */
import { spawn } from "node:child_process"
import { randomBytes } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import * as KubeClient from "@iii/controller/KubeClient"
import { Duration, Effect, Either, Exit, Scope } from "effect"
import * as Envtest from "../packages/controller/test/support/Envtest.ts"

const N = Number(process.env.COMPOSITIONS ?? 500)
// Node flags of the controller process; the default is what manifests/controller/deployment.yaml sets.
const heapLimit = (process.env.CONTROLLER_NODE_OPTIONS ?? "--max-old-space-size=160 --max-semi-space-size=2")
  .split(" ")
  .filter((a) => a !== "")
const namespace = "bench"
const manifest = (path: string) => readFileSync(new URL(`../manifests/${path}`, import.meta.url), "utf8")

const controllerUser: Envtest.User = {
  name: "system:serviceaccount:iii-system:iii-controller",
  token: randomBytes(16).toString("hex"),
  groups: ["system:serviceaccounts", "system:serviceaccounts:iii-system", "system:authenticated"]
}

const composition = (i: number) => ({
  apiVersion: "iii.io/v1",
  kind: "ServiceComposition",
  metadata: { name: `app-${i}`, namespace },
  spec: {
    components: [
      {
        name: "api",
        image: `api:v${i}`,
        replicas: { min: 2, max: 8 },
        scalingPolicy: { metric: "p99_latency", threshold: "200ms" }
      },
      { name: "worker", image: `worker:v${i}` }
    ],
    observability: { metrics: ["p99_latency", "error_rate"], traces: true }
  }
})

interface Counters {
  readonly reads: number
  readonly writes: number
  readonly reconciles: number
  readonly rss: number
  readonly heapUsed: number
}

interface Listed {
  readonly items: ReadonlyArray<{
    readonly metadata?: { readonly generation?: number }
    readonly status?: { readonly observedGeneration?: number }
  }>
}

const program = Effect.gen(function* () {
  const found = Envtest.findBinaries()
  if (Either.isLeft(found)) {
    console.log(`bench:controller skipped: ${found.left}`)
    return
  }
  const env = yield* Envtest.start({ users: [controllerUser] })
  const admin = yield* Effect.provide(
    KubeClient.KubeClient,
    KubeClient.layer({ kubeconfigText: env.kubeconfig(env.admin) })
  )
  const asAdmin = Effect.provideService(KubeClient.KubeClient, admin)
  yield* asAdmin(Envtest.applyYaml(manifest("crd/servicecomposition.yaml")))
  yield* asAdmin(Envtest.applyYaml(manifest("namespace/namespace.yaml")))
  yield* asAdmin(Envtest.applyYaml(manifest("controller/rbac.yaml")))
  yield* admin.request({
    method: "POST",
    path: "/api/v1/namespaces",
    body: { apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } }
  })

  // The controller runs in a child process of its own, so its RSS is its own.
  const kubeconfigFile = join(env.dir, "controller.kubeconfig")
  writeFileSync(kubeconfigFile, env.kubeconfig(controllerUser))
  let latest: Counters = { reads: 0, writes: 0, reconciles: 0, rss: 0, heapUsed: 0 }
  let ready = false
  const child = yield* Effect.acquireRelease(
    Effect.sync(() =>
      spawn(
        process.execPath,
        [...heapLimit, fileURLToPath(new URL("./controller-child.ts", import.meta.url))],
        {
          env: { ...process.env, BENCH_KUBECONFIG: kubeconfigFile },
          stdio: ["ignore", "pipe", "inherit"]
        }
      )
    ),
    (c) => Effect.sync(() => c.kill("SIGTERM"))
  )
  createInterface({ input: child.stdout }).on("line", (line) => {
    if (!line.startsWith("{")) return
    latest = JSON.parse(line) as Counters
    ready = true
  })
  while (!ready) yield* Effect.sleep(Duration.millis(100))
  const before = latest
  const reconcilesBefore = latest.reconciles

  const start = performance.now()
  yield* Effect.forEach(
    Array.from({ length: N }, (_, i) => i),
    (i) =>
      admin.request({
        method: "POST",
        path: KubeClient.pathOf(KubeClient.resources.ServiceComposition, namespace),
        body: composition(i)
      }),
    { concurrency: 32, discard: true }
  )
  const created = performance.now()

  const compositionsPath = KubeClient.pathOf(KubeClient.resources.ServiceComposition, namespace)
  const count = (kind: keyof typeof KubeClient.resources) =>
    admin
      .request<{ items: ReadonlyArray<unknown> }>({
        method: "GET",
        path: KubeClient.pathOf(KubeClient.resources[kind], namespace),
        query: { labelSelector: "app.kubernetes.io/managed-by=iii-controller" }
      })
      .pipe(Effect.map((l) => l.items.length))
  // Done when every status is written for its generation and every child exists.
  const done = Effect.gen(function* () {
    const list = yield* admin.request<Listed>({ method: "GET", path: compositionsPath })
    const statused = list.items.filter(
      (c) =>
        c.status?.observedGeneration !== undefined && c.status.observedGeneration === c.metadata?.generation
    ).length
    if (statused < N) return false
    const [deployments, services, hpas] = [
      yield* count("Deployment"),
      yield* count("Service"),
      yield* count("HorizontalPodAutoscaler")
    ]
    return deployments === 2 * N && services === 2 * N && hpas === N
  })
  const deadline = start + 300_000
  while (!(yield* done)) {
    if (performance.now() > deadline) return yield* Effect.dieMessage("not converged after 300 s")
    yield* Effect.sleep(Duration.millis(200))
  }
  const converged = performance.now()
  yield* Effect.sleep(Duration.millis(300))
  const after = latest
  const burstRequests = after.reads + after.writes - before.reads - before.writes
  const burstWrites = after.writes - before.writes

  // Steady state: a full resync with nothing changed.
  yield* Effect.sleep(Duration.seconds(2))
  const steadyBefore = latest
  const reconcilesSteady = latest.reconciles
  child.kill("SIGUSR2")
  while (latest.reconciles < reconcilesSteady + N) yield* Effect.sleep(Duration.millis(50))
  yield* Effect.sleep(Duration.millis(300))
  const steadyAfter = latest
  const rssMb = latest.rss / 2 ** 20

  console.log(
    `bench:controller  ${N} compositions × 2 components against kube-apiserver v${Envtest.kubernetesVersion}`
  )
  console.log(`  created all (admin, 32 at a time)      ${((created - start) / 1000).toFixed(1)} s`)
  console.log(
    `  all children applied + status written  ${((converged - start) / 1000).toFixed(1)} s   (target ≤ 60 s)`
  )
  console.log(
    `  API requests per composition           ${(burstRequests / N).toFixed(2)}   (${(burstWrites / N).toFixed(2)} writes; target ≤ 12)`
  )
  console.log(`  reconciles during the burst            ${reconcilesSteady - reconcilesBefore}`)
  console.log(
    `  steady-state resync of all ${N}: writes ${steadyAfter.writes - steadyBefore.writes}, reads ${steadyAfter.reads - steadyBefore.reads}   (target 0 writes)`
  )
  console.log(
    `  controller process RSS                 ${rssMb.toFixed(0)} MB, heap used ${(latest.heapUsed / 2 ** 20).toFixed(0)} MB   (node flags: ${heapLimit.join(" ") || "none"}; target ≤ 250 MB)`
  )
})

const scope = Effect.runSync(Scope.make())
Effect.runPromise(program.pipe(Scope.extend(scope)))
  .catch((e: unknown) => {
    console.error(e)
    process.exitCode = 1
  })
  .finally(() => Effect.runPromise(Scope.close(scope, Exit.void)).then(() => process.exit()))
