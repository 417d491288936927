/**
 * Membership from Kubernetes: nodes started with `--peers-from-service` read the ready endpoints of
 * the obs Service from its EndpointSlices on a real kube-apiserver (the controller tests' envtest),
 * with the identity and RBAC of manifests/obs/rbac.yaml, and follow them as they change. The API
 * server refuses loopback addresses in endpoints, so the nodes run in a network namespace the test
 * makes, on 10.213.0.1, reaching the API server through a bridge.
 */
import { randomBytes } from "node:crypto"
import { readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import { Effect, Either, Exit, Layer, ManagedRuntime, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as KubeClient from "../../controller/src/KubeClient.js"
import * as Envtest from "../../controller/test/support/Envtest.js"
import {
  buildCli,
  eventually,
  freePorts,
  type NodeProcess,
  startCluster,
  type TestCluster
} from "./fixtures/Cluster.js"
import { makeNetns, type NetNs, netnsSkipReason } from "./fixtures/NetNs.js"

const binaries = Envtest.findBinaries()
const skip = Either.isLeft(binaries) ? binaries.left : netnsSkipReason()
if (skip !== undefined) console.warn(`obs EndpointSlice membership test skipped: ${skip}`)

const manifest = (path: string) =>
  readFileSync(new URL(`../../../manifests/${path}`, import.meta.url), "utf8")
const address = "10.213.0.1"

/** The identity manifests/obs/rbac.yaml's ServiceAccount gives an obs pod. */
const obsUser: Envtest.User = {
  name: "system:serviceaccount:iii-system:iii-obs",
  token: randomBytes(16).toString("hex"),
  groups: ["system:serviceaccounts", "system:serviceaccounts:iii-system", "system:authenticated"]
}

const slice = (port: number) => ({
  apiVersion: "discovery.k8s.io/v1",
  kind: "EndpointSlice",
  metadata: {
    name: `iii-obs-${port}`,
    namespace: "iii-system",
    labels: { "kubernetes.io/service-name": "iii-obs" }
  },
  addressType: "IPv4",
  ports: [{ name: "http", port, protocol: "TCP" }],
  endpoints: [{ addresses: [address], conditions: { ready: true } }]
})

describe.skipIf(skip !== undefined)("obs membership from EndpointSlices", () => {
  const scope = Effect.runSync(Scope.make())
  let admin: ManagedRuntime.ManagedRuntime<KubeClient.KubeClient, never>
  let cluster: TestCluster
  let netns: NetNs
  let ports: Array<number>

  beforeAll(async () => {
    buildCli()
    const env = await Effect.runPromise(Envtest.start({ users: [obsUser] }).pipe(Scope.extend(scope)))
    admin = ManagedRuntime.make(Layer.orDie(KubeClient.layer({ kubeconfigText: env.kubeconfig(env.admin) })))
    await admin.runPromise(
      Effect.gen(function* () {
        yield* Envtest.applyYaml(manifest("namespace/namespace.yaml"))
        yield* Envtest.applyYaml(manifest("obs/rbac.yaml"))
      })
    )
    netns = makeNetns([address])
    // Inside the namespace the API server is 127.0.0.1 on its own port, as its certificate names it.
    const apiserverPort = Number(new URL(env.server).port)
    await netns.bridge(apiserverPort, apiserverPort)
    const kubeconfig = join(env.dir, "obs-kubeconfig")
    writeFileSync(kubeconfig, env.kubeconfig(obsUser))
    cluster = await startCluster(0, { env: { KUBECONFIG: kubeconfig }, host: address, wrap: netns.wrap })
    ports = await freePorts(4)
  }, 180_000)
  afterAll(async () => {
    await cluster?.stop()
    netns?.remove()
    await admin?.dispose()
    await Effect.runPromise(Scope.close(scope, Exit.void))
  })

  const create = (port: number) =>
    admin.runPromise(
      Effect.flatMap(KubeClient.KubeClient, (k) =>
        k.request({
          method: "POST",
          path: "/apis/discovery.k8s.io/v1/namespaces/iii-system/endpointslices",
          body: slice(port)
        })
      )
    )
  const start = async (port: number) => {
    const node = cluster.node(port, [], ["--peers-from-service", "iii-system/iii-obs"])
    await node.start()
    return node
  }
  /** A node's members, asked from inside the namespace. */
  const members = (node: NodeProcess): Array<{ address: string; state: string }> => {
    try {
      return JSON.parse(netns.run("curl", ["-s", "--max-time", "5", `${node.url}/v1/cluster`])).members
    } catch {
      return []
    }
  }

  it("finds the ready endpoints, follows a new one, and refuses a node that is not one", async () => {
    const [p1, p2, p3, p4] = ports as [number, number, number, number]
    await create(p1)
    await create(p2)
    const [n1, n2] = [await start(p1), await start(p2)]
    await eventually("two members up", 60_000, async () =>
      [n1, n2].map(members).every((m) => m.length === 2 && m.every((x) => x.state === "up"))
    )
    // Scaled up: a third endpoint, a third node.
    await create(p3)
    const n3 = await start(p3)
    await eventually("three members up", 60_000, async () =>
      [n1, n2, n3].map(members).every((m) => m.length === 3 && m.every((x) => x.state === "up"))
    )
    expect(
      members(n1)
        .map((m) => m.address)
        .sort()
    ).toEqual([p1, p2, p3].map((p) => `${address}:${p}`).sort())
    // A node that is not an endpoint of the Service is an unknown peer.
    const stranger = await start(p4)
    await eventually("the stranger is refused", 30_000, async () =>
      stranger.output.includes(`refused this node: unknown peer ${address}:${p4}`)
    )
    expect(members(n1).map((m) => m.address)).not.toContain(`${address}:${p4}`)
  }, 240_000)
})
