// Builds the dashboard into static files obs serves: one JavaScript and one CSS bundle (Preact, uPlot
// and the pages, minified, content-hashed names under assets/) and the index.html that loads them.
//
//   node packages/obs/dashboard/build.mjs [--out DIR]   # default packages/obs/dist/dashboard
//
// `npm run build` runs it (as `npm run build:dashboard`); it takes well under a second.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { basename, join } from "node:path"
import { fileURLToPath } from "node:url"
import { build } from "esbuild"

const here = fileURLToPath(new URL(".", import.meta.url))
const outFlag = process.argv.indexOf("--out")
const out = outFlag === -1 ? join(here, "..", "dist", "dashboard") : process.argv[outFlag + 1]
if (out === undefined) throw new Error("--out needs a directory")

rmSync(out, { recursive: true, force: true })
mkdirSync(join(out, "assets"), { recursive: true })
const result = await build({
  entryPoints: { app: join(here, "src", "main.tsx") },
  bundle: true,
  minify: true,
  format: "esm",
  target: ["es2022"],
  jsx: "automatic",
  jsxImportSource: "preact",
  outdir: join(out, "assets"),
  entryNames: "[name]-[hash]",
  metafile: true,
  legalComments: "linked",
  logLevel: "warning"
})
const outputs = Object.keys(result.metafile.outputs)
const script = outputs.find((f) => f.endsWith(".js"))
const style = outputs.find((f) => f.endsWith(".css"))
if (script === undefined || style === undefined) throw new Error("esbuild produced no JavaScript or CSS")
const html = readFileSync(join(here, "index.html"), "utf8")
  .replace("%SCRIPT%", `/assets/${basename(script)}`)
  .replace("%STYLE%", `/assets/${basename(style)}`)
writeFileSync(join(out, "index.html"), html)
