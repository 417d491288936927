import { Args, Command } from "@effect/cli"
import { KubeClient, type Status } from "@iii/controller"
import { Console, Effect, Option } from "effect"
import { clientLayer, kubeconfig, namespace } from "./ApplyCommand.js"

const name = Args.text({ name: "NAME" }).pipe(
  Args.optional,
  Args.withDescription("Composition (default: all)")
)

interface Composition {
  readonly metadata?: { readonly name?: string; readonly generation?: number }
  readonly status?: Status.Status
}

const table = (rows: ReadonlyArray<ReadonlyArray<string>>) => {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? []
  return rows
    .map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join("   "))
    .join("\n")
}

const conditionOf = (c: Composition, type: string) => c.status?.conditions?.find((x) => x.type === type)

/** The overview of many compositions: one row each. */
export const summaryTable = (items: ReadonlyArray<Composition>) =>
  table([
    ["NAME", "READY", "COMPONENTS", "PROGRESSING", "DEGRADED", "REASON"],
    ...items.map((c) => [
      c.metadata?.name ?? "",
      c.status?.ready ?? "-",
      String(c.status?.componentCount ?? "-"),
      conditionOf(c, "Progressing")?.status ?? "Unknown",
      conditionOf(c, "Degraded")?.status ?? "Unknown",
      conditionOf(c, "Ready")?.reason ?? "NotReconciled"
    ])
  ])

/** One composition in detail: its conditions, then its components' replicas. */
export const detailTables = (c: Composition) => {
  const stale =
    c.status?.observedGeneration !== undefined && c.status.observedGeneration !== c.metadata?.generation
      ? `\n(status is for generation ${c.status.observedGeneration}; the spec is at ${c.metadata?.generation})`
      : ""
  return (
    [
      table([
        ["CONDITION", "STATUS", "REASON", "MESSAGE"],
        ...(c.status?.conditions ?? []).map((x) => [x.type, x.status, x.reason, x.message])
      ]),
      table([
        ["COMPONENT", "DESIRED", "READY"],
        ...(c.status?.components ?? []).map((x) => [
          x.name,
          String(x.desiredReplicas),
          String(x.readyReplicas)
        ])
      ])
    ].join("\n\n") + stale
  )
}

export const command = Command.make("status", { name, kubeconfig, namespace }, (args) =>
  Effect.gen(function* () {
    const client = yield* KubeClient.KubeClient
    const ns = Option.getOrElse(args.namespace, () => client.namespace)
    const path = KubeClient.pathOf(KubeClient.resources.ServiceComposition, ns)
    if (Option.isSome(args.name)) {
      const c = yield* client.request<Composition>({ method: "GET", path: `${path}/${args.name.value}` })
      yield* Console.log(detailTables(c))
    } else {
      const list = yield* client.request<{ items: ReadonlyArray<Composition> }>({ method: "GET", path })
      yield* Console.log(list.items.length === 0 ? `no compositions in ${ns}` : summaryTable(list.items))
    }
  }).pipe(Effect.provide(clientLayer(args.kubeconfig)))
).pipe(Command.withDescription("Show compositions' conditions and per-component replicas"))
