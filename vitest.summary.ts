import type { RunnerTask, RunnerTestFile } from "vitest"
import type { Reporter } from "vitest/reporters"

const tests = (tasks: ReadonlyArray<RunnerTask>): Array<RunnerTask> =>
  tasks.flatMap((task) => (task.type === "suite" ? tests(task.tasks) : [task]))

/**
 * Ends the run with one plain line, `tests: N passed, N failed, N skipped`, that CI and people can
 * read without knowing vitest's output.
 */
export default class SummaryLine implements Reporter {
  onFinished(files: ReadonlyArray<RunnerTestFile> = []) {
    const all = tests(files)
    const count = (state: string) => all.filter((t) => t.result?.state === state).length
    const skipped = all.filter((t) => t.mode === "skip" || t.mode === "todo").length
    process.stdout.write(`\ntests: ${count("pass")} passed, ${count("fail")} failed, ${skipped} skipped\n`)
  }
}
