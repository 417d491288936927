import { Args, Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { KubeClient } from "@iii/controller"
import { ServiceComposition } from "@iii/core"
import { Console, Effect, Either, Option } from "effect"
import { ValidationFailed } from "./ValidateCommand.js"

const file = Args.file({ name: "FILE" }).pipe(Args.withDescription("ServiceComposition YAML file"))
export const kubeconfig = Options.file("kubeconfig").pipe(
  Options.optional,
  Options.withDescription("kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster)")
)
export const namespace = Options.text("namespace").pipe(
  Options.withAlias("n"),
  Options.optional,
  Options.withDescription("Namespace (default: the kubeconfig context's)")
)

export const clientLayer = (kubeconfigFile: Option.Option<string>) =>
  KubeClient.layer(
    Option.match(kubeconfigFile, { onNone: () => ({}), onSome: (kubeconfig) => ({ kubeconfig }) })
  )

/** Field manager of compositions applied with `iii apply`. */
export const cliFieldManager = "iii-cli"

export const command = Command.make("apply", { file, kubeconfig, namespace }, (args) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(args.file)
    const results = ServiceComposition.fromYaml(text, args.file)
    const problems = results.flatMap((r) =>
      Either.isLeft(r) ? r.left.issues.map((i) => `${r.left.source}: ${i.path}: ${i.message}`) : []
    )
    // Validated locally first: nothing is sent when any document is invalid.
    if (problems.length > 0 || results.length === 0) {
      yield* Console.error(problems.length > 0 ? problems.join("\n") : `${args.file}: no documents`)
      return yield* new ValidationFailed({ invalid: problems.length })
    }
    const client = yield* KubeClient.KubeClient
    for (const result of results) {
      if (Either.isLeft(result)) continue
      const c = result.right
      const ns = c.metadata.namespace ?? Option.getOrElse(args.namespace, () => client.namespace)
      // The spec only: status belongs to the controller, server-set metadata to the server.
      const { apiVersion, kind, spec } = ServiceComposition.encode(c)
      const { name, labels, annotations } = c.metadata
      yield* KubeClient.apply(
        KubeClient.resources.ServiceComposition,
        {
          apiVersion,
          kind,
          metadata: {
            name,
            namespace: ns,
            ...(labels ? { labels } : {}),
            ...(annotations ? { annotations } : {})
          },
          spec
        },
        { fieldManager: cliFieldManager }
      )
      yield* Console.log(`servicecomposition.iii.io/${c.metadata.name} applied in ${ns}`)
    }
  }).pipe(Effect.provide(clientLayer(args.kubeconfig)))
).pipe(Command.withDescription("Validate a ServiceComposition file, then server-side apply it"))
