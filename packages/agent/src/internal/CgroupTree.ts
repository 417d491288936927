/**
 * Where the kubelet puts a pod's containers in the cgroup v2 tree, for the node agent: from a pod's
 * UID, QoS class and a container's ID (as the pod status gives them) to the container's cgroup
 * directory, whose inode number is the id the kernel reports for its processes.
 *
 * The names depend on the kubelet's cgroup driver and the container runtime:
 *
 * | driver | pod directory (Burstable; BestEffort alike; Guaranteed has no QoS level) | container |
 * | --- | --- | --- |
 * | systemd | `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, - as _>.slice` | `cri-containerd-<id>.scope`, `crio-<id>.scope`, `docker-<id>.scope` |
 * | cgroupfs | `kubepods/burstable/pod<uid>` | `<id>` (containerd), `crio-<id>`, `docker-<id>`? |
 *
 * The exact names are tried first; then, because nodes differ (a kubelet `--cgroup-root`, a runtime
 * naming of its own), a bounded search for a directory naming the pod UID, and inside it for one
 * naming the container ID. Pure functions take the listing; `locate` does the reads.
 */
import { readdirSync, readFileSync, statfsSync, statSync } from "node:fs"
import { join } from "node:path"

export type QosClass = "Guaranteed" | "Burstable" | "BestEffort"

/** The cgroup v2 mount in a `/proc/mounts` text (real nodes: /sys/fs/cgroup; hybrids: …/unified). */
export const cgroup2Mount = (mounts: string): string | undefined =>
  mounts
    .split("\n")
    .map((line) => line.split(" "))
    .find((fields) => fields[2] === "cgroup2")?.[1]

/** This machine's cgroup v2 mount, or undefined. */
export const findCgroup2Mount = (): string | undefined => {
  try {
    return cgroup2Mount(readFileSync("/proc/mounts", "utf8"))
  } catch {
    return undefined
  }
}

const CGROUP2_SUPER_MAGIC = 0x63677270

const isCgroup2 = (path: string): boolean => {
  try {
    return statfsSync(path).type === CGROUP2_SUPER_MAGIC
  } catch {
    return false
  }
}

/**
 * The cgroup v2 tree at or under `root` (a node's /sys/fs/cgroup mounted into the agent's
 * container): `root` itself on a pure v2 node, its `unified` directory on a v1/v2 hybrid. A v1
 * hierarchy would name the same pods, with ids the kernel's v2 checks never see.
 */
export const cgroup2At = (root: string): string | undefined =>
  isCgroup2(root) ? root : isCgroup2(`${root}/unified`) ? `${root}/unified` : undefined

/** `containerd://abc…`, `cri-o://abc…`, `docker://abc…` → `abc…` (undefined when malformed). */
export const containerIdOf = (statusId: string | undefined): string | undefined => {
  const match = statusId === undefined ? null : /^[a-z0-9-]+:\/\/([0-9a-f]{12,128})$/.exec(statusId)
  return match?.[1]
}

/** The pod directories the kubelet creates, relative to the cgroup root, for both drivers. */
export const podDirectories = (uid: string, qos: QosClass | undefined): ReadonlyArray<string> => {
  const underscored = uid.replaceAll("-", "_")
  const level = qos === "Burstable" ? "burstable" : qos === "BestEffort" ? "besteffort" : undefined
  return level === undefined
    ? [`kubepods.slice/kubepods-pod${underscored}.slice`, `kubepods/pod${uid}`]
    : [
        `kubepods.slice/kubepods-${level}.slice/kubepods-${level}-pod${underscored}.slice`,
        `kubepods/${level}/pod${uid}`
      ]
}

/** The container directory names the runtimes create, for both drivers. */
export const containerDirectories = (id: string): ReadonlyArray<string> => [
  `cri-containerd-${id}.scope`,
  `crio-${id}.scope`,
  `docker-${id}.scope`,
  id,
  `crio-${id}`,
  `docker-${id}`
]

/** Whether a directory name is the pod's (either UID spelling, `pod` before it). */
export const namesPod = (name: string, uid: string): boolean =>
  name.includes(`pod${uid}`) || name.includes(`pod${uid.replaceAll("-", "_")}`)

const isDirectory = (path: string): boolean => {
  try {
    return statSync(path).isDirectory()
  } catch {
    return false
  }
}

const subdirectories = (path: string): ReadonlyArray<string> => {
  try {
    return readdirSync(path, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
  } catch {
    return []
  }
}

const hostOnly = new Set(["system.slice", "user.slice", "init.scope", "machine.slice"])

/** The pod's directory: the kubelet's names first, then a breadth-first search (depth ≤ 5). */
export const locatePod = (root: string, uid: string, qos: QosClass | undefined): string | undefined => {
  for (const candidate of podDirectories(uid, qos)) {
    const path = join(root, candidate)
    if (isDirectory(path)) return path
  }
  let level = [root]
  for (let depth = 0; depth < 5 && level.length > 0; depth++) {
    const next: Array<string> = []
    for (const dir of level) {
      for (const name of subdirectories(dir)) {
        const path = join(dir, name)
        if (namesPod(name, uid)) return path
        // The host's own services never hold pods.
        if (!(depth === 0 && hostOnly.has(name))) next.push(path)
      }
    }
    level = next
  }
  return undefined
}

/** The container's directory inside its pod's: the runtimes' names, else one naming the ID. */
export const locateContainer = (podDir: string, id: string): string | undefined => {
  for (const candidate of containerDirectories(id)) {
    const path = join(podDir, candidate)
    if (isDirectory(path)) return path
  }
  const named = subdirectories(podDir).find((name) => name.includes(id))
  return named === undefined ? undefined : join(podDir, named)
}

/**
 * A directory and every directory below it (bounded): a runtime may put a container's processes in
 * a child cgroup of its own (crun's `container` sub-cgroup, systemd-managed services inside), and
 * the kernel reports the innermost one.
 */
export const withDescendants = (dir: string, limit = 64): ReadonlyArray<string> => {
  const found = [dir]
  for (let i = 0; i < found.length && found.length < limit; i++) {
    for (const name of subdirectories(found[i] ?? "")) {
      if (found.length >= limit) break
      found.push(join(found[i] ?? "", name))
    }
  }
  return found
}

/** The container's cgroup directories (its own and those below it), or undefined when not there (yet). */
export const locate = (
  root: string,
  pod: { readonly uid: string; readonly qos: QosClass | undefined },
  containerId: string
): ReadonlyArray<string> | undefined => {
  const podDir = locatePod(root, pod.uid, pod.qos)
  const containerDir = podDir === undefined ? undefined : locateContainer(podDir, containerId)
  return containerDir === undefined ? undefined : withDescendants(containerDir)
}
