import { Command } from "@effect/cli"
import { Crd } from "@iii/core"
import { Console } from "effect"

export const command = Command.make("crd", {}, () => Console.log(Crd.toYaml().trimEnd())).pipe(
  Command.withDescription("Print the ServiceComposition CustomResourceDefinition (kubectl apply -f -)")
)
