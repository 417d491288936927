// Runs one coverage-guided fuzz target with Jazzer.js (libFuzzer inside Node) and prints what it did:
//
//   node scripts/fuzz.mjs <wire|http|params|composition> [libFuzzer options, e.g. -max_total_time=60]
//
// The target is fuzz/<name>.fuzz.mjs, over the built packages (built here first). Inputs libFuzzer
// finds interesting go to ~/.cache/iii/fuzz/<name>/corpus (the committed seeds in fuzz/seeds/<name>
// are read, never written); crashes, timeouts and out-of-memory inputs to fuzz/findings/<name>/.
// Node runs under the C runtime of scripts/fuzz-runtime.sh (Jazzer's native part needs a newer
// glibc than Debian 12's), through fuzz/jazzer.cjs, which makes libFuzzer's fork mode (-fork=N: N
// jobs, one per core) start its jobs the same way. Exit status: libFuzzer's (0: nothing found).
import { spawn, spawnSync } from "node:child_process"
import { mkdirSync, readdirSync } from "node:fs"
import { homedir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const repo = fileURLToPath(new URL("..", import.meta.url))
/** Per target: the packages it fuzzes (built first), libraries whose parsing it drives (instrumented
 * too, so coverage guides the fuzzer into them), and the longest input worth trying. */
const targets = {
  wire: { packages: ["core"], libraries: ["msgpackr/"], maxLen: 8192 },
  http: { packages: ["agent"], libraries: [], maxLen: 4096 },
  params: { packages: ["obs"], libraries: [], maxLen: 1024 },
  composition: { packages: ["core"], libraries: [], maxLen: 2048 }
}
const [target, ...given] = process.argv.slice(2)
// Jazzer.js appends its own -timeout (5 s unless told by its --timeout, in ms) after the engine
// options, overriding a -timeout given there; so a -timeout=S given here goes to Jazzer.js.
const timeoutOption = /^-timeout=(\d+)$/
const timeout = given.map((a) => timeoutOption.exec(a)?.[1]).find((s) => s !== undefined)
const badTimeout = given.find((a) => a.startsWith("-timeout=") && !timeoutOption.test(a))
if (badTimeout !== undefined) {
  console.error(`fuzz: ${badTimeout}: -timeout takes whole seconds`)
  process.exit(2)
}
const engineArgs = given.filter((a) => !timeoutOption.test(a))
const settings = targets[target]
if (settings === undefined) {
  console.error(`usage: node scripts/fuzz.mjs <${Object.keys(targets).join("|")}> [libFuzzer options]`)
  process.exit(2)
}

const run = (command, args) => {
  const done = spawnSync(command, args, { cwd: repo, stdio: ["ignore", "pipe", "inherit"], encoding: "utf8" })
  if (done.status !== 0) {
    console.error(`fuzz:${target}: ${command} ${args.join(" ")} failed`)
    process.exit(done.status ?? 1)
  }
  return done.stdout.trim()
}
run(process.execPath, [
  join(repo, "node_modules/typescript/bin/tsc"),
  "-b",
  ...settings.packages.map((p) => `packages/${p}`)
])
const node = run("bash", ["scripts/fuzz-runtime.sh", process.execPath])

const corpus = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "iii", "fuzz", target, "corpus")
const findings = join(repo, "fuzz", "findings", target)
mkdirSync(corpus, { recursive: true })
mkdirSync(findings, { recursive: true })
const before = new Set(readdirSync(findings))

const args = [
  join(repo, "fuzz", "jazzer.cjs"),
  join(repo, "fuzz", `${target}.fuzz.mjs`),
  corpus,
  join(repo, "fuzz", "seeds", target),
  "--sync",
  "--includes=packages/",
  ...settings.libraries.map((l) => `--includes=${l}`),
  // Replaces the default (node_modules), which would leave out the libraries above.
  "--excludes=/node_modules/.bin/",
  ...(timeout === undefined ? [] : [`--timeout=${Number(timeout) * 1000}`]),
  "--",
  `-artifact_prefix=${findings}/`,
  "-print_final_stats=1",
  `-max_len=${settings.maxLen}`,
  "-rss_limit_mb=2048",
  ...engineArgs
]
const started = Date.now()
const fuzzer = spawn(node, args, {
  cwd: repo,
  env: { ...process.env, III_FUZZ_NODE: node },
  stdio: ["ignore", "inherit", "pipe"]
})
let tail = ""
const stats = {}
fuzzer.stderr.on("data", (chunk) => {
  process.stderr.write(chunk)
  tail = (tail + chunk.toString()).slice(-65536)
  for (const line of tail.split("\n")) {
    // "#N  NEW cov: … corp: K/size", or in fork mode "#N: cov: … corp: K exec/s …".
    const status = /^#(\d+):?\s+(?:\S+\s+)?cov: (\d+) ft: (\d+) corp: (\d+)/.exec(line)
    if (status)
      Object.assign(stats, { runs: +status[1], cov: +status[2], ft: +status[3], corpus: +status[4] })
    // Not anchored: libFuzzer prints the last stat right after its dictionary, on the same line.
    const stat = /stat::(\w+):\s+(\d+)/.exec(line)
    if (stat) stats[stat[1]] = +stat[2]
  }
})
fuzzer.on("exit", (code, signal) => {
  const seconds = (Date.now() - started) / 1000
  const runs = stats.number_of_executed_units ?? stats.runs ?? 0
  const found = readdirSync(findings).filter((f) => !before.has(f))
  const n = (x) => (x ?? 0).toLocaleString("en-US")
  console.log(
    [
      `fuzz:${target}: ${n(runs)} executions in ${seconds.toFixed(0)} s (${n(stats.average_exec_per_sec ?? Math.round(runs / seconds))}/s)`,
      `coverage: ${n(stats.cov)} edges, ${n(stats.ft)} features; corpus: ${n(stats.corpus)} inputs; peak RSS ${n(stats.peak_rss_mb)} MB`,
      found.length === 0
        ? "findings: none"
        : `findings: ${found.length}: ${found.map((f) => join(findings, f)).join(", ")}`
    ].join("; ")
  )
  process.exit(code ?? (signal === null ? 1 : 128))
})
