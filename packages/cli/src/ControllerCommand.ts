import { Command } from "@effect/cli"
import { Controller, KubeClient } from "@iii/controller"
import { Effect, Layer, Option } from "effect"
import { clientLayer, kubeconfig, namespace } from "./ApplyCommand.js"

export const command = Command.make("controller", { kubeconfig, namespace }, (args) =>
  Effect.gen(function* () {
    const client = yield* KubeClient.KubeClient
    // Environment settings (III_*) first; --namespace narrows what is watched.
    const fromEnv = yield* Controller.settingsFromEnv(client.namespace)
    const settings = Option.match(args.namespace, {
      onNone: () => fromEnv,
      onSome: (ns) => ({ ...fromEnv, namespace: ns })
    })
    yield* Effect.logInfo(
      `iii controller: watching ${settings.namespace ?? "all namespaces"} on ${client.server}`
    )
    return yield* Layer.launch(
      Controller.layer(settings).pipe(Layer.provide(Layer.succeed(KubeClient.KubeClient, client)))
    )
  }).pipe(Effect.provide(clientLayer(args.kubeconfig)))
).pipe(Command.withDescription("Run the iii controller (leader-elected) against the current cluster"))
