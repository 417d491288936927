/**
 * The `iii` command: one entry point for every part. Each part contributes its subcommand from its
 * own module; this list is the only place they meet.
 */
import { Command } from "@effect/cli"
import { Effect } from "effect"
import { version } from "./internal/Version.js"

/**
 * Each subcommand's module, loaded only when that subcommand runs: `iii agent`, what every pod runs,
 * then loads neither the controller's Kubernetes client nor obs's LMDB store (README.md, "Memory").
 * Help, completions and unknown commands load them all.
 */
const subcommands = {
  validate: () => import("./ValidateCommand.js"),
  crd: () => import("./CrdCommand.js"),
  render: () => import("./RenderCommand.js"),
  apply: () => import("./ApplyCommand.js"),
  status: () => import("./StatusCommand.js"),
  controller: () => import("./ControllerCommand.js"),
  agent: () => import("./AgentCommand.js"),
  obs: () => import("./ObsCommand.js"),
  up: () => import("./UpCommand.js"),
  services: () => import("./ServicesCommand.js"),
  top: () => import("./TopCommand.js"),
  tail: () => import("./TailCommand.js"),
  trace: () => import("./TraceCommand.js"),
  correlate: () => import("./CorrelateCommand.js"),
  demo: () => import("./DemoCommand.js")
}

type Subcommand = Awaited<ReturnType<(typeof subcommands)[keyof typeof subcommands]>>["command"]
type Load = () => Promise<{ readonly command: Subcommand }>

const isSubcommand = (name: string | undefined): name is keyof typeof subcommands =>
  name !== undefined && Object.hasOwn(subcommands, name)

const root = (commands: readonly [Subcommand, ...Array<Subcommand>]) =>
  Command.make("iii").pipe(
    Command.withDescription("Declarative service orchestration for Kubernetes with observability built in"),
    Command.withSubcommands(commands)
  )

/** The whole `iii` command, every subcommand loaded. */
export const iii = Effect.promise(async () => {
  const loaders: ReadonlyArray<Load> = Object.values(subcommands)
  const [first, ...rest] = await Promise.all(loaders.map((load) => load()))
  if (first === undefined) throw new Error("no subcommands")
  return root([first.command, ...rest.map((module) => module.command)])
})

/** Runs `iii` on `argv` (`[node, script, ...args]`), loading only the subcommand it names. */
export const run = (argv: ReadonlyArray<string>) => {
  const name = argv[2]
  const load: Load | undefined = isSubcommand(name) ? subcommands[name] : undefined
  const command =
    load === undefined ? iii : Effect.promise(load).pipe(Effect.map((module) => root([module.command])))
  return Effect.flatMap(command, (command) => Command.run(command, { name: "iii", version })(argv))
}
