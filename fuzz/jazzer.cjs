// Jazzer.js's command line, started by scripts/fuzz.mjs through the command of
// scripts/fuzz-runtime.sh ($III_FUZZ_NODE). In fork mode Jazzer.js writes a script that starts each
// job as process.argv says; under that command process.argv[0] is the dynamic loader, not Node, so
// it is set to the command first.
process.argv[0] = process.env.III_FUZZ_NODE ?? process.argv[0]
require("@jazzer.js/core/dist/cli.js")
