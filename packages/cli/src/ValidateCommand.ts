import { Args, Command } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { ServiceComposition } from "@iii/core"
import { Console, Data, Effect, Either } from "effect"

/** Some file did not validate; its problems were already printed. */
export class ValidationFailed extends Data.TaggedError("ValidationFailed")<{ readonly invalid: number }> {}

const files = Args.file({ name: "FILE" }).pipe(
  Args.atLeast(1),
  Args.withDescription("ServiceComposition YAML files (several documents per file are fine)")
)

/** Lines to print for one file: `FILE: ok`, or `FILE: path: reason` per problem. */
export const report = (
  source: string,
  text: string
): { readonly lines: Array<string>; readonly ok: boolean } => {
  const results = ServiceComposition.fromYaml(text, source)
  if (results.length === 0) return { lines: [`${source}: no documents`], ok: false }
  const lines = results.flatMap((result) =>
    Either.match(result, {
      onRight: () => [`${source}: ok`],
      onLeft: (invalid) => invalid.issues.map((issue) => `${invalid.source}: ${issue.path}: ${issue.message}`)
    })
  )
  return { lines, ok: results.every(Either.isRight) }
}

export const command = Command.make("validate", { files }, ({ files }) =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    let invalid = 0
    for (const file of files) {
      const outcome = yield* fs.readFileString(file).pipe(
        Effect.map((text) => report(file, text)),
        Effect.catchAll((error) =>
          Effect.succeed({ lines: [`${file}: cannot read: ${error.message}`], ok: false })
        )
      )
      if (!outcome.ok) invalid++
      yield* Console.log(outcome.lines.join("\n"))
    }
    if (invalid > 0) return yield* new ValidationFailed({ invalid })
  })
).pipe(Command.withDescription("Check ServiceComposition files; prints every problem with its path"))
