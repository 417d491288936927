import { mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import * as CgroupTree from "../src/internal/CgroupTree.js"
import { fromKubeconfigText, type Pod } from "../src/internal/Kube.js"
import { identityOf, isTraced, logDirOf, propagates } from "../src/internal/NodeMode.js"

const uid = "486ceed5-5c71-4f68-898f-7d0d87bf8bd5"
const id = "ad73260800d4392733c4c1df2eb07197246272a77807ae11b0e3e143aecf0998"

describe("CgroupTree", () => {
  const root = mkdtempSync(join(tmpdir(), "iii-cgroups-"))
  afterAll(() => rmSync(root, { recursive: true, force: true }))

  it("finds the cgroup v2 mount, real node or hybrid", () => {
    expect(CgroupTree.cgroup2Mount("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n")).toBe("/sys/fs/cgroup")
    expect(
      CgroupTree.cgroup2Mount(
        "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0"
      )
    ).toBe("/sys/fs/cgroup/unified")
    expect(CgroupTree.cgroup2Mount("proc /proc proc rw 0 0")).toBeUndefined()
  })

  it("takes the cgroup v2 tree at a root or its unified directory, never a v1 hierarchy", () => {
    expect(CgroupTree.cgroup2At(root)).toBeUndefined()
    const mount = CgroupTree.findCgroup2Mount()
    if (mount !== undefined) expect(CgroupTree.cgroup2At(mount)).toBe(mount)
    if (mount?.endsWith("/unified") === true)
      expect(CgroupTree.cgroup2At(mount.slice(0, -"/unified".length))).toBe(mount)
  })

  it("reads container IDs of every runtime and refuses malformed ones", () => {
    expect(CgroupTree.containerIdOf(`containerd://${id}`)).toBe(id)
    expect(CgroupTree.containerIdOf(`cri-o://${id}`)).toBe(id)
    expect(CgroupTree.containerIdOf(`docker://${id}`)).toBe(id)
    expect(CgroupTree.containerIdOf("containerd://../../etc")).toBeUndefined()
    expect(CgroupTree.containerIdOf(undefined)).toBeUndefined()
  })

  it("names pod directories as both cgroup drivers do, per QoS class", () => {
    const slice = uid.replaceAll("-", "_")
    expect(CgroupTree.podDirectories(uid, "Burstable")).toEqual([
      `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${slice}.slice`,
      `kubepods/burstable/pod${uid}`
    ])
    expect(CgroupTree.podDirectories(uid, "BestEffort")[1]).toBe(`kubepods/besteffort/pod${uid}`)
    expect(CgroupTree.podDirectories(uid, "Guaranteed")).toEqual([
      `kubepods.slice/kubepods-pod${slice}.slice`,
      `kubepods/pod${uid}`
    ])
  })

  it("locates a container: cgroupfs and containerd, systemd and CRI-O, a nested cgroup, an odd root", () => {
    const cgroupfs = join(root, "kubepods/burstable", `pod${uid}`, id)
    mkdirSync(cgroupfs, { recursive: true })
    expect(CgroupTree.locate(root, { uid, qos: "Burstable" }, id)).toEqual([cgroupfs])
    const other = "0e6cfa8c3d2634dc42050d9611e0ffe8744f253540077e69d9ae8a88900fa269"
    const otherUid = "4cee37dd-eab9-471a-9ff3-3573907d2031"
    const systemd = join(
      root,
      "kubepods.slice",
      `kubepods-pod${otherUid.replaceAll("-", "_")}.slice`,
      `crio-${other}.scope`
    )
    mkdirSync(join(systemd, "container"), { recursive: true })
    expect(CgroupTree.locate(root, { uid: otherUid, qos: "Guaranteed" }, other)).toEqual([
      systemd,
      join(systemd, "container")
    ])
    // A kubelet with --cgroup-root=/k8s and a QoS class it was not told: found by searching.
    const third = "7bb51d7b41ed1e2cee77f871cbe44324b70ed8dbf5c3c31ee0e2d54ffbe56c12"
    const thirdUid = "b0fe2515-4651-420c-874c-e87316f1b01c"
    const odd = join(root, "k8s", "kubepods", "besteffort", `pod${thirdUid}`, `${third}`)
    mkdirSync(odd, { recursive: true })
    expect(CgroupTree.locate(root, { uid: thirdUid, qos: undefined }, third)).toEqual([odd])
    expect(CgroupTree.locate(root, { uid: thirdUid, qos: "BestEffort" }, id)).toBeUndefined()
  })
})

const pod = (labels: Record<string, string>, annotations: Record<string, string> = {}): Pod => ({
  metadata: { uid, name: "cart-7d9f", namespace: "shop", labels, annotations }
})

describe("node mode's view of a pod", () => {
  it('traces pods the controller labelled or annotated iii.io/trace: "true", nothing else', () => {
    expect(isTraced(pod({ "iii.io/composition": "shop" }))).toBe(true)
    expect(isTraced(pod({}, { "iii.io/trace": "true" }))).toBe(true)
    expect(isTraced(pod({}, { "iii.io/trace": "false" }))).toBe(false)
    expect(isTraced(pod({ app: "x" }))).toBe(false)
  })

  it('propagates for pods annotated iii.io/propagation: "true", and only when the agent can', () => {
    const optedIn = pod({ "iii.io/composition": "shop" }, { "iii.io/propagation": "true" })
    expect(propagates(optedIn, true)).toBe(true)
    expect(propagates(optedIn, false)).toBe(false)
    expect(propagates(pod({ "iii.io/composition": "shop" }), true)).toBe(false)
    expect(propagates(pod({}, { "iii.io/propagation": "yes" }), true)).toBe(false)
  })

  it("names the service after the component, else the app labels, else the container", () => {
    expect(
      identityOf(pod({ "iii.io/composition": "shop", "iii.io/component": "cart" }), "app", "n1")
    ).toEqual({
      service: "cart",
      namespace: "shop",
      pod: "cart-7d9f",
      container: "app",
      node: "n1",
      component: "cart",
      composition: "shop"
    })
    expect(identityOf(pod({ "app.kubernetes.io/name": "auth" }), "c", "n1").service).toBe("auth")
    expect(identityOf(pod({ app: "legacy" }), "c", "n1").service).toBe("legacy")
    expect(identityOf(pod({}), "sidecar", "n1").service).toBe("sidecar")
    expect(logDirOf(pod({}), "app")).toBe(`shop_cart-7d9f_${uid}/app`)
  })
})

describe("kubeconfig", () => {
  const config = (user: object, cluster: object = { server: "https://10.0.0.1:6443" }) =>
    JSON.stringify({
      "current-context": "c",
      contexts: [{ name: "c", context: { cluster: "k", user: "u" } }],
      clusters: [{ name: "k", cluster }],
      users: [{ name: "u", user }]
    })

  it("takes a token, client certificates and the CA from the current context", () => {
    const parsed = fromKubeconfigText(
      config(
        { token: "abc", "client-certificate-data": Buffer.from("CERT").toString("base64") },
        {
          server: "https://10.0.0.1:6443",
          "certificate-authority-data": Buffer.from("CA").toString("base64")
        }
      ),
      "/tmp/kc"
    )
    if (!("access" in parsed)) throw new Error(JSON.stringify(parsed))
    expect(parsed.access.server).toBe("https://10.0.0.1:6443")
    expect(parsed.access.headers()).toEqual({ authorization: "Bearer abc" })
    expect(parsed.access.ca?.toString()).toBe("CA")
    expect(parsed.access.cert?.toString()).toBe("CERT")
  })

  it("recognises exec plugins and auth providers (refused by resolveAccess), and says what is wrong", () => {
    expect(fromKubeconfigText(config({ exec: { command: "aws" } }), "/tmp/kc")).toEqual({ needsClient: true })
    expect(fromKubeconfigText("current-context: none\ncontexts: []", "/tmp/kc")).toMatchObject({
      error: expect.stringMatching(/no context none/)
    })
    expect(fromKubeconfigText(config({}, {}), "/tmp/kc")).toMatchObject({
      error: expect.stringMatching(/no server/)
    })
  })
})
