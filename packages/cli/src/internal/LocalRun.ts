/**
 * How `iii up` runs a composition on one machine: which components it starts (those with a local
 * `command`), on which ports, with which environment. Pure: the ports come in already chosen.
 *
 * Components find each other as pods find Services in Kubernetes, through the variables the kubelet
 * sets for each Service `<composition>-<component>`: `SHOP_CATALOG_SERVICE_HOST=127.0.0.1` and
 * `SHOP_CATALOG_SERVICE_PORT=…`. Each listens on `$PORT`.
 */
import type { ServiceComposition } from "@iii/core"

export interface Ports {
  /** Where the app listens ($PORT). */
  readonly app: number
  /** Where the others reach it: the app itself in eBPF mode, the agent's proxy in front of it in proxy mode. */
  readonly service: number
}

export interface LocalComponent {
  readonly name: string
  readonly argv: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string>>
  readonly ports: Ports
}

type Component = ServiceComposition.Component

export const runnable = (composition: ServiceComposition.ServiceComposition): ReadonlyArray<Component> =>
  composition.spec.components.filter((c) => c.command !== undefined)

/** The port the component declares first, if any (in a cluster, the Service's and container's port). */
export const declaredPort = (component: Component): number | undefined => component.ports?.[0]?.port

/** `shop` + `catalog` → `SHOP_CATALOG`, the prefix of the kubelet's Service variables. */
export const serviceVariablePrefix = (composition: string, component: string): string =>
  `${composition}-${component}`.toUpperCase().replace(/[^A-Z0-9]/g, "_")

/** Each runnable component with its argv, environment (declared env, $PORT, every Service's address) and ports. */
export const plan = (
  composition: ServiceComposition.ServiceComposition,
  ports: ReadonlyMap<string, Ports>
): ReadonlyArray<LocalComponent> => {
  const name = composition.metadata.name
  const components = runnable(composition)
  const services: Record<string, string> = {}
  for (const c of components) {
    const p = ports.get(c.name)
    if (p === undefined) continue
    const prefix = serviceVariablePrefix(name, c.name)
    services[`${prefix}_SERVICE_HOST`] = "127.0.0.1"
    services[`${prefix}_SERVICE_PORT`] = String(p.service)
  }
  return components.flatMap((c) => {
    const p = ports.get(c.name)
    if (p === undefined || c.command === undefined) return []
    const declared = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]))
    return [
      { name: c.name, argv: c.command, env: { ...services, ...declared, PORT: String(p.app) }, ports: p }
    ]
  })
}
