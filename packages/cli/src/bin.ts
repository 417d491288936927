#!/usr/bin/env node
// The modules, not the package index: the index loads every platform module (HTTP client and
// server included), ~11 MB of heap no subcommand needs (README.md, "Memory").
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect } from "effect"
import { run } from "./Cli.js"

run(process.argv).pipe(
  // The problems were printed already; only the exit status is left to set.
  Effect.catchTag("ValidationFailed", () =>
    Effect.sync(() => {
      process.exitCode = 1
    })
  ),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain
)
