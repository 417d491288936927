/**
 * Cluster membership from Kubernetes: the ready endpoints of the obs headless Service, read from its
 * EndpointSlices (`kubernetes.io/service-name=NAME`) and watched with `@kubernetes/client-node`'s
 * informer (list, then watch, relisting after a dropped watch). Credentials as kubectl finds them:
 * `KUBECONFIG`, `~/.kube/config`, else the pod's service account.
 *
 * An endpoint with a `hostname` (a StatefulSet pod behind its governing headless Service) is
 * `HOSTNAME.SERVICE.NAMESPACE.svc:PORT`, a name that survives the pod's restarts with a new IP;
 * one without is `IP:PORT`. The port is the slice's port with the number this node advertises (every
 * pod of a StatefulSet advertises the same: the plain port, or the TLS one when peers use client
 * certificates), else the one named `http`, else its first.
 */
import { readFileSync } from "node:fs"
import { Errors } from "@iii/core"
import { DiscoveryV1Api, KubeConfig, makeInformer, type V1EndpointSlice } from "@kubernetes/client-node"

export interface ServiceRef {
  readonly namespace: string
  readonly name: string
}

const serviceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

/** `NAME` or `NAMESPACE/NAME`; the namespace defaults to `$POD_NAMESPACE`, the pod's own, else `default`. */
export const parseServiceRef = (text: string): ServiceRef => {
  const [first, second] = text.split("/", 2)
  if (second !== undefined && first !== undefined) return { namespace: first, name: second }
  let namespace = process.env.POD_NAMESPACE
  if (namespace === undefined)
    try {
      namespace = readFileSync(serviceAccountNamespace, "utf8").trim()
    } catch {
      namespace = "default"
    }
  return { namespace, name: text }
}

/** The member addresses a set of slices lists, sorted (pure: tested without a cluster). */
export const addressesOf = (
  service: ServiceRef,
  advertisedPort: number,
  slices: ReadonlyArray<V1EndpointSlice>
): ReadonlyArray<string> => {
  const out = new Set<string>()
  for (const slice of slices) {
    const port = (
      slice.ports?.find((p) => p.port === advertisedPort) ??
      slice.ports?.find((p) => p.name === "http") ??
      slice.ports?.[0]
    )?.port
    if (port === undefined || port === null) continue
    for (const e of slice.endpoints ?? []) {
      if (e.conditions?.ready === false) continue
      if (e.hostname !== undefined && e.hostname !== null && e.hostname !== "")
        out.add(`${e.hostname}.${service.name}.${service.namespace}.svc:${port}`)
      else
        for (const ip of e.addresses.slice(0, 1))
          out.add(ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`)
    }
  }
  return [...out].sort()
}

export interface Watched {
  readonly stop: () => Promise<void>
}

/** Watches the Service's slices; `onMembers` gets the ready addresses after every change. */
export const watch = async (
  service: ServiceRef,
  advertisedPort: number,
  onMembers: (members: ReadonlyArray<string>) => void,
  onError: (message: string) => void
): Promise<Watched> => {
  const kc = new KubeConfig()
  kc.loadFromDefault()
  const api = kc.makeApiClient(DiscoveryV1Api)
  const labelSelector = `kubernetes.io/service-name=${service.name}`
  const informer = makeInformer<V1EndpointSlice>(
    kc,
    `/apis/discovery.k8s.io/v1/namespaces/${service.namespace}/endpointslices`,
    () => api.listNamespacedEndpointSlice({ namespace: service.namespace, labelSelector }),
    labelSelector
  )
  const changed = () => onMembers(addressesOf(service, advertisedPort, informer.list(service.namespace)))
  informer.on("add", changed)
  informer.on("update", changed)
  informer.on("delete", changed)
  let stopped = false
  informer.on("error", (e: unknown) => {
    if (stopped) return
    onError(`watching the endpoints of ${service.namespace}/${service.name}: ${Errors.messageOf(e)}`)
    // The informer stops on an error; start it again after a pause (it relists).
    setTimeout(() => {
      if (!stopped) informer.start().catch(() => undefined)
    }, 2_000).unref()
  })
  await informer.start()
  changed()
  return {
    stop: () => {
      stopped = true
      return informer.stop()
    }
  }
}
