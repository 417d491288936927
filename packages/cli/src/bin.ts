#!/usr/bin/env node
// The modules, not the package index: the index loads every platform module (HTTP client and
// server included), ~11 MB of heap no subcommand needs (README.md, "Memory").
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Effect } from "effect"
import { run } from "./Cli.js"
import { describe } from "./internal/Failure.js"

const fail = (line: string | undefined) =>
  Effect.sync(() => {
    if (line !== undefined) process.stderr.write(`iii: ${line}\n`)
    process.exitCode = 1
  })

// Piped into `head` or a closed pager: stop quietly, as Unix tools do.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(0)
})

run(process.argv).pipe(
  Effect.catchAll((error) => fail(describe(error))),
  // A defect is a bug in iii: its stack is what a bug report needs.
  Effect.catchAllDefect((defect) => fail(`internal error: ${Cause.pretty(Cause.die(defect))}`)),
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({ disableErrorReporting: true })
)
