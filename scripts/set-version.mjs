#!/usr/bin/env node
// Moves every @iii/* package to one version together, and pins their dependencies on each other
// to exactly that version, then refreshes package-lock.json:
//
//   npm run set-version -- 0.2.0
//
// `npm version --workspaces` bumps each package but leaves the ranges between them as they were.
import { execFileSync } from "node:child_process"
import { readFileSync, writeFileSync } from "node:fs"

const version = process.argv[2] ?? ""
if (!/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/.test(version)) {
  console.error("usage: npm run set-version -- <major.minor.patch[-prerelease]>")
  process.exit(2)
}

const root = new URL("../", import.meta.url)
const workspaces = JSON.parse(readFileSync(new URL("package.json", root), "utf8")).workspaces
for (const dir of workspaces) {
  const file = new URL(`${dir}/package.json`, root)
  const pkg = JSON.parse(readFileSync(file, "utf8"))
  pkg.version = version
  for (const name of Object.keys(pkg.dependencies ?? {}))
    if (name.startsWith("@iii/")) pkg.dependencies[name] = version
  writeFileSync(file, `${JSON.stringify(pkg, null, 2)}\n`)
  console.error(`${pkg.name} ${version}`)
}
execFileSync("npm", ["install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund"], {
  cwd: root,
  stdio: "inherit"
})
