import { Args, Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { Render } from "@iii/controller"
import { ServiceComposition } from "@iii/core"
import { Console, Effect, Either, Option } from "effect"
import { stringify } from "yaml"
import { ValidationFailed } from "./ValidateCommand.js"

const file = Args.file({ name: "FILE" }).pipe(Args.withDescription("ServiceComposition YAML file"))
const namespace = Options.text("namespace").pipe(
  Options.withAlias("n"),
  Options.optional,
  Options.withDescription("Namespace for compositions that name none")
)
const agent = Options.choice("agent", ["sidecar", "node"]).pipe(
  Options.withDefault("sidecar" as const),
  Options.withDescription("sidecar: inject the agent into every pod; node: the agent DaemonSet observes them")
)
const scaling = Options.choice("scaling", ["hpa", "controller"]).pipe(
  Options.withDefault("hpa" as const),
  Options.withDescription(
    "hpa: render HorizontalPodAutoscalers; controller: the controller's own scaling loop"
  )
)

/** The YAML `iii render` prints for a file: every object of every valid composition, or the problems. */
export const renderYaml = (
  text: string,
  source: string,
  settings: Render.RenderSettings,
  namespace?: string
): Either.Either<string, ReadonlyArray<string>> => {
  const results = ServiceComposition.fromYaml(text, source)
  const problems = results.flatMap((r) =>
    Either.isLeft(r) ? r.left.issues.map((i) => `${r.left.source}: ${i.path}: ${i.message}`) : []
  )
  const valid = results.flatMap((r) => (Either.isRight(r) ? [r.right] : []))
  for (const c of valid) {
    for (const i of Render.semanticIssues(c))
      problems.push(`${source}: ${c.metadata.name}: ${i.path}: ${i.message}`)
  }
  if (problems.length > 0 || valid.length === 0)
    return Either.left(problems.length > 0 ? problems : [`${source}: no documents`])
  const objects = valid.flatMap((c) =>
    Render.render(
      c.metadata.namespace === undefined && namespace !== undefined
        ? { ...c, metadata: { ...c.metadata, namespace } }
        : c,
      settings
    )
  )
  return Either.right(objects.map((o) => stringify(o)).join("---\n"))
}

export const command = Command.make("render", { file, namespace, agent, scaling }, (args) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(args.file)
    const settings = { ...Render.defaultRenderSettings, agent: args.agent, scaling: args.scaling }
    const out = renderYaml(text, args.file, settings, Option.getOrUndefined(args.namespace))
    if (Either.isLeft(out)) {
      yield* Console.error(out.left.join("\n"))
      return yield* new ValidationFailed({ invalid: 1 })
    }
    yield* Console.log(out.right)
  })
).pipe(Command.withDescription("Print the Kubernetes objects the controller would apply for a composition"))
