import { Args, Command, Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { Controller, Render } from "@iii/controller"
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
// Each setting defaults to the controller's own variable (Controller.renderSettingsFromEnv), so with the
// controller's environment `iii render` prints exactly what that controller applies.
const agentMode = Options.choice("agent-mode", ["node", "sidecar"]).pipe(
  Options.optional,
  Options.withDescription(
    "node: the agent DaemonSet traces the pods; sidecar: inject the agent into every pod (default $III_AGENT_MODE or node)"
  )
)
const scaling = Options.choice("scaling", ["hpa", "controller"]).pipe(
  Options.optional,
  Options.withDescription(
    "hpa: render HorizontalPodAutoscalers; controller: the controller's own scaling loop (default $III_SCALING or hpa)"
  )
)
const agentImage = Options.text("agent-image").pipe(
  Options.optional,
  Options.withDescription(
    `image of the injected agent sidecar (default $III_AGENT_IMAGE or ${Render.defaultRenderSettings.agentImage})`
  )
)
const obsUrl = Options.text("obs-url").pipe(
  Options.optional,
  Options.withDescription(
    `obs URL the agents send to (default $III_OBS_URL or ${Render.defaultRenderSettings.obsUrl})`
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

export const command = Command.make(
  "render",
  { file, namespace, agentMode, scaling, agentImage, obsUrl },
  (args) =>
    Effect.gen(function* () {
      const fs = yield* FileSystem.FileSystem
      const text = yield* fs.readFileString(args.file)
      const fromEnv = yield* Controller.renderSettingsFromEnv
      const settings: Render.RenderSettings = {
        agentMode: Option.getOrElse(args.agentMode, () => fromEnv.agentMode),
        scaling: Option.getOrElse(args.scaling, () => fromEnv.scaling),
        agentImage: Option.getOrElse(args.agentImage, () => fromEnv.agentImage),
        obsUrl: Option.getOrElse(args.obsUrl, () => fromEnv.obsUrl)
      }
      const out = renderYaml(text, args.file, settings, Option.getOrUndefined(args.namespace))
      if (Either.isLeft(out)) {
        yield* Console.error(out.left.join("\n"))
        return yield* new ValidationFailed({ invalid: 1 })
      }
      yield* Console.log(out.right)
    })
).pipe(Command.withDescription("Print the Kubernetes objects the controller would apply for a composition"))
