/**
 * The node agent: one agent for every traced pod of its node (`Agent` option `node`).
 *
 * - Pods: the ones scheduled on the node (`Kube.watchPods`, field selector `spec.nodeName`). A pod is
 *   traced when it carries the label `iii.io/composition` (the controller sets it) or the annotation
 *   `iii.io/trace: "true"`.
 * - Capture: each container of a traced pod is a capture target of its own. Its cgroup v2 directory
 *   (and those below it) is found from the pod UID, QoS class and container ID (`CgroupTree`) and put
 *   in the kernel's cgroup target map with the container's target number; a restarted container's
 *   new directory replaces the old one; a deleted pod's leave the map. Containers whose directory is
 *   not there yet are looked for again every poll (250 ms).
 * - Identity: namespace, pod, container, node, composition and component (the pod's `iii.io/*`
 *   labels); `service` is the component, else the pod's `app.kubernetes.io/name` or `app` label,
 *   else the container's name.
 * - Logs: from the kubelet's files (`CriLogs.Follower`, one per container, polled every 250 ms), read
 *   from the start of a container's first file. Positions are saved in `<stateDir>/log-positions.json`
 *   once obs has acknowledged the lines before them (`Exporter.checkpoint` / `acknowledged`), every
 *   2 s and at shutdown: an agent restarted after a clean stop neither loses nor repeats a line; after
 *   a crash it repeats at most the last 2 s or so (at least once, never lost).
 * - A restart rebuilds everything from the API (the list that starts every watch) and the cgroup tree.
 */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import type * as Scope from "effect/Scope"
import type * as EbpfCapture from "../EbpfCapture.js"
import { AgentConfigError } from "../Errors.js"
import type { ExporterService } from "../Exporter.js"
import * as CgroupTree from "./CgroupTree.js"
import { Follower, type Position } from "./CriLogs.js"
import type { EventProcessor } from "./EventProcessor.js"
import * as Kube from "./Kube.js"
import type { Identity } from "./Spans.js"

export interface NodeOptions {
  /** The node whose pods are traced (in a cluster: `spec.nodeName` through the Downward API). */
  readonly nodeName: string
  /** Credentials: this kubeconfig; default the service account in a cluster, else kubectl's lookup. */
  readonly kubeconfig?: string | undefined
  /** The cgroup v2 tree as the node's kubelet sees it. Default: this machine's cgroup2 mount. */
  readonly cgroupRoot?: string | undefined
  /** The kubelet's pod log directory. Default /var/log/pods. */
  readonly podLogs?: string | undefined
  /** Where log positions are kept across restarts (must be writable). Default /var/lib/iii-agent. */
  readonly stateDir?: string | undefined
  /** How often logs are read and missing cgroups looked for. Default 250 ms. */
  readonly pollIntervalMs?: number | undefined
  /**
   * Trace propagation for the pods that opt in (annotation `iii.io/propagation: "true"`); the capture
   * was started with `propagation`.
   */
  readonly propagate?: boolean | undefined
}

export const compositionLabel = "iii.io/composition"
export const componentLabel = "iii.io/component"
export const traceAnnotation = "iii.io/trace"
/** A pod's opt-in to trace propagation (the controller sets it from `observability.propagation`). */
export const propagationAnnotation = "iii.io/propagation"

/** Whether a pod's outbound requests get a traceparent: it opted in, and the agent can. Pure. */
export const propagates = (pod: Kube.Pod, agentPropagates: boolean): boolean =>
  agentPropagates && pod.metadata.annotations?.[propagationAnnotation] === "true"

export const isTraced = (pod: Kube.Pod): boolean =>
  pod.metadata.labels?.[compositionLabel] !== undefined ||
  pod.metadata.annotations?.[traceAnnotation] === "true"

/** The identity of a pod's container. Pure. */
export const identityOf = (pod: Kube.Pod, container: string, node: string): Identity => {
  const labels = pod.metadata.labels ?? {}
  const component = labels[componentLabel]
  const composition = labels[compositionLabel]
  return {
    service: component ?? labels["app.kubernetes.io/name"] ?? labels.app ?? container,
    namespace: pod.metadata.namespace,
    pod: pod.metadata.name,
    container,
    node,
    ...(component === undefined ? {} : { component }),
    ...(composition === undefined ? {} : { composition })
  }
}

/** `<namespace>_<pod>_<uid>/<container>`: a container's log directory under the pod log root. */
export const logDirOf = (pod: Kube.Pod, container: string): string =>
  `${pod.metadata.namespace}_${pod.metadata.name}_${pod.metadata.uid}/${container}`

interface Container {
  readonly target: number
  readonly podUid: string
  identity: Identity
  /** The container ID whose cgroups are in the map (or being looked for). */
  containerId: string | undefined
  cgroupIds: ReadonlyArray<number>
  /** Its ID is known but its directory was not found yet. */
  unlocated: boolean
  /** Its outbound requests get a traceparent (its pod opted in, the agent can). */
  readonly propagate: boolean
  readonly follower: Follower
}

export interface NodeStats {
  readonly pods: number
  readonly containers: number
  /** Containers whose cgroup directory was not found (yet). */
  readonly unlocated: number
  readonly logLines: number
}

export interface NodeMode {
  /** The identity of a capture target (for `EventProcessor`'s `identityOf`). */
  readonly identityOf: (target: number) => Identity | undefined
  readonly stats: () => NodeStats
}

const positionsFile = "log-positions.json"

const loadPositions = (stateDir: string | undefined): Map<string, Position> => {
  if (stateDir === undefined) return new Map()
  try {
    return new Map(Object.entries(JSON.parse(readFileSync(join(stateDir, positionsFile), "utf8"))))
  } catch {
    return new Map()
  }
}

const savePositions = (stateDir: string, positions: ReadonlyMap<string, Position>) => {
  mkdirSync(stateDir, { recursive: true })
  const file = join(stateDir, positionsFile)
  writeFileSync(`${file}.tmp`, JSON.stringify(Object.fromEntries(positions)))
  renameSync(`${file}.tmp`, file)
}

/**
 * Starts the node agent's pod tracking on a running capture (started with cgroup targets enabled):
 * the targets it adds are described by `identityOf`, their telemetry goes through `processor`.
 */
export const start = (
  options: NodeOptions,
  capture: EbpfCapture.EbpfCapture,
  processor: EventProcessor,
  exporter: ExporterService
): Effect.Effect<NodeMode, AgentConfigError, Scope.Scope> =>
  Effect.gen(function* () {
    const access = yield* Kube.resolveAccess(options.kubeconfig)
    const node = options.nodeName
    const given = options.cgroupRoot ?? CgroupTree.findCgroup2Mount() ?? "/sys/fs/cgroup"
    const cgroupRoot = CgroupTree.cgroup2At(given)
    if (cgroupRoot === undefined)
      return yield* new AgentConfigError({
        message: `--cgroup-root ${given}: not a cgroup v2 tree (nor is ${given}/unified); mount the node's /sys/fs/cgroup there`
      })
    const podLogs = options.podLogs ?? "/var/log/pods"
    const stateDir = options.stateDir
    const interval = `${options.pollIntervalMs ?? 250} millis` as const
    const saved = loadPositions(stateDir)
    const identities = new Map<number, Identity>()
    /** By pod UID, then container name. */
    const pods = new Map<string, Map<string, Container>>()
    let nextTarget = 2
    let logLines = 0

    yield* Effect.logInfo(
      `node mode: pods of node ${node} (${access.source}), cgroups under ${cgroupRoot}, logs from ${podLogs}` +
        (stateDir === undefined ? " (log positions not kept)" : `, log positions in ${stateDir}`)
    )

    const run = <A>(effect: Effect.Effect<A, unknown>) => Effect.runSync(Effect.either(effect))

    const forgetCgroups = (container: Container) => {
      for (const id of container.cgroupIds) run(capture.removeCgroup(id))
      container.cgroupIds = []
    }

    /** Puts the container's cgroups in the map; false while its directory does not exist yet. */
    const locate = (container: Container, qos: CgroupTree.QosClass | undefined): boolean => {
      const id = container.containerId
      if (id === undefined) return true
      const dirs = CgroupTree.locate(cgroupRoot, { uid: container.podUid, qos }, id)
      if (dirs === undefined) return false
      const ids: Array<number> = []
      for (const dir of dirs) {
        const added = run(capture.addCgroup(dir, container.target, { propagate: container.propagate }))
        if (added._tag === "Right") ids.push(added.right)
      }
      container.cgroupIds = ids
      return true
    }

    const qosOf = new Map<string, CgroupTree.QosClass | undefined>()

    const remove = (uid: string) => {
      const containers = pods.get(uid)
      if (containers === undefined) return
      for (const container of containers.values()) {
        forgetCgroups(container)
        logLines += container.follower.poll()
        container.follower.close()
        saved.delete(container.follower.dir)
        processor.retire(container.target)
        identities.delete(container.target)
      }
      pods.delete(uid)
      qosOf.delete(uid)
    }

    const apply = (pod: Kube.Pod) => {
      const uid = pod.metadata.uid
      if (!isTraced(pod) || (pod.spec?.nodeName !== undefined && pod.spec.nodeName !== node)) {
        remove(uid)
        return
      }
      qosOf.set(uid, pod.status?.qosClass)
      let containers = pods.get(uid)
      if (containers === undefined) {
        containers = new Map()
        pods.set(uid, containers)
      }
      for (const status of pod.status?.containerStatuses ?? []) {
        let container = containers.get(status.name)
        const identity = identityOf(pod, status.name, node)
        if (container === undefined) {
          const target = nextTarget++
          const dir = join(podLogs, logDirOf(pod, status.name))
          container = {
            target,
            podUid: uid,
            identity,
            containerId: undefined,
            cgroupIds: [],
            unlocated: false,
            propagate: propagates(pod, options.propagate === true),
            follower: new Follower(
              dir,
              (line) => {
                processor.logLine(target, line.content, line.cut, line.stream, line.timeUnixNano)
              },
              saved.get(dir)
            )
          }
          containers.set(status.name, container)
          identities.set(target, identity)
        }
        const id = CgroupTree.containerIdOf(status.containerID)
        if (id !== undefined && status.state?.running !== undefined && id !== container.containerId) {
          // A new container (or a restart): its own cgroup replaces the previous one.
          forgetCgroups(container)
          container.containerId = id
          container.unlocated = !locate(container, pod.status?.qosClass)
        }
      }
    }

    const reconcile = (listed: ReadonlyArray<Kube.Pod>) => {
      const present = new Set(listed.map((pod) => pod.metadata.uid))
      for (const uid of [...pods.keys()]) if (!present.has(uid)) remove(uid)
      for (const pod of listed) apply(pod)
    }

    yield* Kube.watchPods(access, node, {
      onList: reconcile,
      onPod: (type, pod) => (type === "DELETED" ? remove(pod.metadata.uid) : apply(pod))
    })

    const each = (f: (container: Container) => void) => {
      for (const containers of pods.values()) for (const container of containers.values()) f(container)
    }
    const tick = Effect.sync(() =>
      each((container) => {
        if (container.unlocated) container.unlocated = !locate(container, qosOf.get(container.podUid))
        logLines += container.follower.poll()
      })
    )
    yield* tick.pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped)

    if (stateDir !== undefined) {
      // Positions are saved once obs has every line before them.
      const pending: Array<{ readonly seq: number; readonly positions: Map<string, Position> }> = []
      const snapshot = () => {
        const positions = new Map(saved)
        each((container) => {
          const position = container.follower.position
          if (position !== undefined) positions.set(container.follower.dir, position)
        })
        return positions
      }
      const checkpoint = Effect.gen(function* () {
        const positions = snapshot()
        pending.push({ seq: yield* exporter.checkpoint, positions })
        const acknowledged = yield* exporter.acknowledged
        let safe: Map<string, Position> | undefined
        while (pending[0] !== undefined && pending[0].seq <= acknowledged) safe = pending.shift()?.positions
        if (safe !== undefined) savePositions(stateDir, safe)
      })
      yield* checkpoint.pipe(
        Effect.catchAllDefect((defect) => Effect.logWarning(`saving log positions in ${stateDir}`, defect)),
        Effect.repeat(Schedule.spaced("2 seconds")),
        Effect.forkScoped
      )
      // At shutdown (before the exporter stops): the last lines, their acks (3 s at most), the positions.
      yield* Effect.addFinalizer(() =>
        Effect.gen(function* () {
          each((container) => {
            logLines += container.follower.poll()
          })
          const positions = snapshot()
          const seq = yield* exporter.checkpoint
          const acked = yield* exporter.acknowledged.pipe(
            Effect.repeat({ until: (done) => done >= seq, schedule: Schedule.spaced("20 millis") }),
            Effect.timeoutOption("3 seconds")
          )
          if (acked._tag === "Some") savePositions(stateDir, positions)
          else
            yield* Effect.logWarning(
              "stopping: obs did not acknowledge the last log lines; their positions are not saved"
            )
          each((container) => container.follower.close())
        }).pipe(
          Effect.catchAllDefect((defect) => Effect.logWarning(`saving log positions in ${stateDir}`, defect))
        )
      )
    }

    return {
      identityOf: (target) => identities.get(target),
      stats: () => {
        let containers = 0
        let unlocated = 0
        each((container) => {
          containers++
          if (container.unlocated) unlocated++
        })
        return { pods: pods.size, containers, unlocated, logLines }
      }
    } satisfies NodeMode
  })
