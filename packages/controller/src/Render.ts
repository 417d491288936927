/**
 * The pure heart of the controller: a ServiceComposition in, the Kubernetes objects it stands for out.
 * No I/O; `iii render FILE` prints exactly what the controller would apply.
 *
 * Per component `<composition>-<component>`:
 * - a Deployment (replicas = `min`, or 1 without bounds; left out under a scalingPolicy, where the
 *   autoscaler owns it); the pods carry the composition's labels, which is how the node agent (the
 *   default, `agentMode: "node"`) finds them, and in `sidecar` mode the iii agent as a native sidecar;
 * - a ClusterIP Service; an Ingress when the component declares one;
 * - under a scalingPolicy with `scaling: "hpa"`, an autoscaling/v2 HorizontalPodAutoscaler: cpu as a
 *   Resource metric, latencies/error rate/request rate as External metrics served by obs.
 */
import type { ServiceComposition as SC } from "@iii/core"
import { ServiceComposition } from "@iii/core"
import type { Deployment } from "kubernetes-types/apps/v1.js"
import type { HorizontalPodAutoscaler, MetricSpec } from "kubernetes-types/autoscaling/v2.js"
import type { Container, EnvVar, ResourceRequirements, Service } from "kubernetes-types/core/v1.js"
import type { Ingress } from "kubernetes-types/networking/v1.js"
import type { KubeObject, OwnerReference } from "./KubeClient.js"

type Composition = SC.ServiceComposition
type Component = SC.Component

/** How rendered workloads are scaled and observed. Chosen per controller (see `Settings`). */
export interface RenderSettings {
  /**
   * `node` (default): the agent DaemonSet (`manifests/node-agent`) traces every labelled pod of its
   * node, nothing is injected; `sidecar`: inject the agent into every pod (where DaemonSets are not
   * allowed).
   */
  readonly agentMode: "node" | "sidecar"
  /**
   * `hpa`: render HorizontalPodAutoscalers; `controller`: the controller's own scaling loop scales
   * on obs' metrics (cpu policies keep an HPA: CPU does not use the external metrics slot).
   */
  readonly scaling: "hpa" | "controller"
  /** The agent sidecar's image. */
  readonly agentImage: string
  /** obs' base URL agents send telemetry to (they add the ingest path). */
  readonly obsUrl: string
}

export const defaultRenderSettings: RenderSettings = {
  agentMode: "node",
  scaling: "hpa",
  agentImage: "ghcr.io/iii-io/iii-agent:0.1.0",
  obsUrl: "ws://iii-obs.iii-system.svc:4320"
}

export const fieldManager = "iii-controller"
export const compositionLabel = "iii.io/composition"
export const componentLabel = "iii.io/component"
export const managedByLabel = "app.kubernetes.io/managed-by"

/** External metric names obs serves (External Metrics API), per scaling metric. */
export const externalMetricNames = {
  p99_latency: "iii_p99_latency_ms",
  p95_latency: "iii_p95_latency_ms",
  p50_latency: "iii_p50_latency_ms",
  error_rate: "iii_error_rate",
  request_rate: "iii_request_rate"
} as const

export const childName = (composition: string, component: string) => `${composition}-${component}`

const defaultPorts = [{ name: "http", port: 8080, protocol: "TCP" as const }]

const portsOf = (component: Component) =>
  (component.ports ?? defaultPorts).map((p, i) => ({
    name: p.name ?? (i === 0 ? "http" : `port-${p.port}`),
    port: p.port,
    protocol: p.protocol ?? "TCP"
  }))

export const selectorLabels = (composition: string, component: string) => ({
  [compositionLabel]: composition,
  [componentLabel]: component
})

const labels = (composition: string, component: string) => ({
  "app.kubernetes.io/name": component,
  "app.kubernetes.io/instance": childName(composition, component),
  "app.kubernetes.io/part-of": composition,
  [managedByLabel]: fieldManager,
  ...selectorLabels(composition, component)
})

const ownerReferences = (c: Composition): ReadonlyArray<OwnerReference> | undefined =>
  c.metadata.uid === undefined
    ? undefined
    : [
        {
          apiVersion: ServiceComposition.apiVersion,
          kind: ServiceComposition.kind,
          name: c.metadata.name,
          uid: c.metadata.uid,
          controller: true,
          blockOwnerDeletion: true
        }
      ]

const metadata = (c: Composition, component: string) => {
  const owners = ownerReferences(c)
  return {
    name: childName(c.metadata.name, component),
    ...(c.metadata.namespace === undefined ? {} : { namespace: c.metadata.namespace }),
    labels: labels(c.metadata.name, component),
    ...(owners === undefined ? {} : { ownerReferences: [...owners] })
  }
}

/** The agent's view of `spec.observability`, passed as JSON in env and in a pod annotation. */
export const agentConfig = (c: Composition) =>
  JSON.stringify({
    metrics: c.spec.observability?.metrics ?? [],
    traces: c.spec.observability?.traces ?? false,
    logs: c.spec.observability?.logs ?? null,
    // Only when asked: the JSON of compositions without it stays as it was.
    ...(c.spec.observability?.propagation === true ? { propagation: true } : {})
  })

const fieldRef = (name: string, fieldPath: string): EnvVar => ({
  name,
  valueFrom: { fieldRef: { fieldPath } }
})

/**
 * The agent sidecar's memory settings (packages/agent README, "Memory"). `NODE_OPTIONS`: V8 heap
 * limits; the live heap is ~30 MB, and without limits V8 sizes the heap from the node's memory and
 * lets garbage grow it far beyond that. `MALLOC_ARENA_MAX=1`: one glibc malloc arena instead of one
 * per thread (V8's background threads kept ~15 MB in arenas of their own under load).
 */
export const agentNodeOptions = "--max-semi-space-size=2 --max-old-space-size=64"
export const agentMallocArenaMax = "1"

/**
 * The node's tracefs, where the agent looks up the ids of the syscall tracepoints it attaches to. A
 * container's /sys has no tracefs mounted, and mounting one needs CAP_SYS_ADMIN, which the sidecar lacks.
 */
const tracefsVolume = { name: "iii-tracefs", hostPath: { path: "/sys/kernel/tracing" } }

const agentSidecar = (c: Composition, component: Component, settings: RenderSettings): Container => ({
  name: "iii-agent",
  image: settings.agentImage,
  // A native sidecar (init container that keeps running): up before the app, down after it.
  restartPolicy: "Always",
  // Everything else comes from the III_* environment below.
  args: ["agent", "--all-pod-processes"],
  env: [
    fieldRef("III_POD_NAME", "metadata.name"),
    fieldRef("III_NAMESPACE", "metadata.namespace"),
    fieldRef("III_NODE_NAME", "spec.nodeName"),
    fieldRef("III_POD_IP", "status.podIP"),
    { name: "III_COMPOSITION", value: c.metadata.name },
    { name: "III_COMPONENT", value: component.name },
    { name: "III_SERVICE", value: component.name },
    { name: "III_OBS_URL", value: settings.obsUrl },
    ...(c.spec.observability?.logs === undefined
      ? []
      : [{ name: "III_LOG_LEVEL", value: c.spec.observability.logs.level }]),
    { name: "III_AGENT_CONFIG", value: agentConfig(c) },
    { name: "NODE_OPTIONS", value: agentNodeOptions },
    { name: "MALLOC_ARENA_MAX", value: agentMallocArenaMax }
  ],
  resources: {
    // The request is what the agent holds idle (~115 MB RSS, packages/agent README, "Memory").
    requests: { cpu: "50m", memory: "128Mi" },
    limits: { cpu: "500m", memory: "256Mi" }
  },
  securityContext: {
    // eBPF needs BPF (load programs, maps) and PERFMON (tracepoints, ring buffer); nothing privileged.
    capabilities: { drop: ["ALL"], add: ["BPF", "PERFMON"] },
    allowPrivilegeEscalation: false,
    privileged: false,
    readOnlyRootFilesystem: true,
    seccompProfile: { type: "RuntimeDefault" }
  },
  volumeMounts: [{ name: tracefsVolume.name, mountPath: "/sys/kernel/tracing", readOnly: true }]
})

const deployment = (c: Composition, component: Component, settings: RenderSettings): Deployment => {
  const name = c.metadata.name
  const ports = portsOf(component)
  const app: Container = {
    name: component.name,
    image: component.image,
    ports: ports.map((p) => ({ name: p.name, containerPort: p.port, protocol: p.protocol })),
    ...(component.env === undefined
      ? {}
      : { env: component.env.map((e) => ({ name: e.name, value: e.value })) }),
    ...(component.resources === undefined
      ? {}
      : { resources: withoutUndefined<ResourceRequirements>(component.resources) })
  }
  const scaled = component.scalingPolicy !== undefined
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: metadata(c, component.name),
    spec: {
      // Under a scalingPolicy the autoscaler owns replicas; applying it here would fight the HPA.
      ...(scaled ? {} : { replicas: component.replicas?.min ?? 1 }),
      selector: { matchLabels: selectorLabels(name, component.name) },
      template: {
        metadata: {
          labels: labels(name, component.name),
          annotations: {
            "iii.io/observability": agentConfig(c),
            "iii.io/agent": settings.agentMode,
            // The node agent's per-pod opt-in to trace propagation (it attaches to the pod's cgroup).
            ...(c.spec.observability?.propagation === true ? { "iii.io/propagation": "true" } : {})
          }
        },
        spec: {
          // The sidecar traces the app's processes, which it sees in a shared pid namespace.
          ...(settings.agentMode === "sidecar"
            ? {
                shareProcessNamespace: true,
                initContainers: [agentSidecar(c, component, settings)],
                volumes: [tracefsVolume]
              }
            : {}),
          containers: [app]
        }
      }
    }
  }
}

const service = (c: Composition, component: Component): Service => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: metadata(c, component.name),
  spec: {
    type: "ClusterIP",
    selector: selectorLabels(c.metadata.name, component.name),
    ports: portsOf(component).map((p) => ({
      name: p.name,
      port: p.port,
      targetPort: p.name,
      protocol: p.protocol
    }))
  }
})

const ingress = (c: Composition, component: Component, host: string, path: string): Ingress => ({
  apiVersion: "networking.k8s.io/v1",
  kind: "Ingress",
  metadata: metadata(c, component.name),
  spec: {
    rules: [
      {
        host,
        http: {
          paths: [
            {
              path,
              pathType: "Prefix",
              backend: {
                service: {
                  name: childName(c.metadata.name, component.name),
                  port: { name: portsOf(component)[0]?.name ?? "http" }
                }
              }
            }
          ]
        }
      }
    ]
  }
})

/** A Kubernetes quantity string for a number: integers as is, fractions in milli-units (`1.5` → `1500m`). */
export const quantity = (value: number): string =>
  Number.isInteger(value) ? String(value) : `${Math.round(value * 1000)}m`

/** The HPA metric for a scaling policy. Percentiles and error rates are Values (not per-pod averages). */
export const hpaMetric = (c: Composition, component: Component, policy: SC.ScalingPolicy): MetricSpec => {
  const t = policy.threshold
  if (policy.metric === "cpu") {
    return {
      type: "Resource",
      resource: {
        name: "cpu",
        target: { type: "Utilization", averageUtilization: t.kind === "percentage" ? t.percent : 0 }
      }
    }
  }
  const selector = { matchLabels: selectorLabels(c.metadata.name, component.name) }
  const metric = { name: externalMetricNames[policy.metric], selector }
  switch (t.kind) {
    case "duration":
      return {
        type: "External",
        external: { metric, target: { type: "Value", value: quantity(t.milliseconds) } }
      }
    case "percentage":
      return { type: "External", external: { metric, target: { type: "Value", value: quantity(t.percent) } } }
    case "rate":
      // A request rate threshold is per replica: the HPA divides the component's total by its replicas.
      return {
        type: "External",
        external: { metric, target: { type: "AverageValue", averageValue: quantity(t.perSecond) } }
      }
  }
}

const hpa = (c: Composition, component: Component, policy: SC.ScalingPolicy): HorizontalPodAutoscaler => ({
  apiVersion: "autoscaling/v2",
  kind: "HorizontalPodAutoscaler",
  metadata: metadata(c, component.name),
  spec: {
    scaleTargetRef: {
      apiVersion: "apps/v1",
      kind: "Deployment",
      name: childName(c.metadata.name, component.name)
    },
    minReplicas: component.replicas?.min ?? 1,
    maxReplicas: component.replicas?.max ?? 1,
    metrics: [hpaMetric(c, component, policy)]
  }
})

const withoutUndefined = <A>(a: object): A => JSON.parse(JSON.stringify(a)) as A

/**
 * Problems the CRD schema cannot see, each with its path. A composition with any of these is not
 * rendered: the controller reports them as `Degraded` and changes nothing in the cluster.
 */
export const semanticIssues = (c: Composition): ReadonlyArray<{ path: string; message: string }> => {
  const issues: Array<{ path: string; message: string }> = []
  c.spec.components.forEach((component, i) => {
    const name = childName(c.metadata.name, component.name)
    // Service names are DNS-1035 labels: at most 63 characters, starting with a letter.
    if (name.length > 63 || !/^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(name)) {
      issues.push({
        path: `spec.components[${i}].name`,
        message: `child name "${name}" (<composition>-<component>) is not a DNS-1035 label of at most 63 characters`
      })
    }
    if (component.scalingPolicy?.metric === "cpu" && component.resources?.requests?.cpu === undefined) {
      issues.push({
        path: `spec.components[${i}].resources.requests.cpu`,
        message: "scaling on cpu needs a cpu request (utilisation is measured against it)"
      })
    }
  })
  return issues
}

/** Every object the composition stands for, in apply order (Deployments before what points at them). */
export const render = (
  c: Composition,
  settings: RenderSettings = defaultRenderSettings
): ReadonlyArray<KubeObject> =>
  c.spec.components.flatMap((component) => {
    const objects: Array<object> = [deployment(c, component, settings), service(c, component)]
    if (component.ingress !== undefined)
      objects.push(ingress(c, component, component.ingress.host, component.ingress.path))
    // CPU comes from metrics.k8s.io, not the external slot: it keeps its HPA with either setting.
    const policy = component.scalingPolicy
    if (policy !== undefined && (settings.scaling === "hpa" || policy.metric === "cpu")) {
      objects.push(hpa(c, component, policy))
    }
    // kubernetes-types' optional fields are not exactOptionalPropertyTypes-clean; the JSON is what counts.
    return objects as ReadonlyArray<KubeObject>
  })
