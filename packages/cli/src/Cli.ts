/**
 * The `iii` command: one entry point for every part. Each part contributes its subcommand from its
 * own module; this list is the only place they meet.
 */
import { Command } from "@effect/cli"
import * as AgentCommand from "./AgentCommand.js"
import * as ApplyCommand from "./ApplyCommand.js"
import * as ControllerCommand from "./ControllerCommand.js"
import * as CrdCommand from "./CrdCommand.js"
import * as DemoCommand from "./DemoCommand.js"
import * as ObsCommand from "./ObsCommand.js"
import * as RenderCommand from "./RenderCommand.js"
import * as StatusCommand from "./StatusCommand.js"
import * as ValidateCommand from "./ValidateCommand.js"

export const iii = Command.make("iii").pipe(
  Command.withDescription("Declarative service orchestration for Kubernetes with observability built in"),
  Command.withSubcommands([
    ValidateCommand.command,
    CrdCommand.command,
    RenderCommand.command,
    ApplyCommand.command,
    StatusCommand.command,
    ControllerCommand.command,
    AgentCommand.command,
    ObsCommand.command,
    DemoCommand.command
  ])
)

export const run = Command.run(iii, { name: "iii", version: "0.1.0" })
