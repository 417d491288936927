/**
 * Where `iii up` keeps what outlives one run, and how the terminal tools find the node it runs.
 *
 *   <home>/obs/          the obs node's LMDB store (a second `iii up` sees the earlier traces)
 *   <home>/logs/<c>.log  each component's output; <home>/logs/iii.log, iii's own log
 *   <home>/token         the obs token (made on first run, mode 0600)
 *   <home>/node.json     the running node's URL, written at start and removed at exit
 *
 * The default home is `iii/up` under the user's cache (`$III_CACHE`, else `$XDG_CACHE_HOME/iii`,
 * else `~/.cache/iii`); `iii up --data DIR` uses DIR.
 */
import { randomBytes } from "node:crypto"
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import { homedir } from "node:os"
import { join } from "node:path"

export const cacheDir = (env: NodeJS.ProcessEnv = process.env): string =>
  env.III_CACHE ?? join(env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "iii")

export const defaultHome = (env: NodeJS.ProcessEnv = process.env): string => join(cacheDir(env), "up")

/** The port `iii up` gives its obs node unless told otherwise (4320 stays free for a real node). */
export const defaultPort = 7070

export const paths = (home: string) => ({
  obs: join(home, "obs"),
  logs: join(home, "logs"),
  token: join(home, "token"),
  node: join(home, "node.json")
})

/** Creates the home's folders; a path that cannot be one fails here, with the reason, before anything starts. */
export const prepare = (home: string): void => {
  const p = paths(home)
  mkdirSync(p.obs, { recursive: true })
  mkdirSync(p.logs, { recursive: true })
}

/** The home's token, made on first use: 32 random bytes, base64url, readable by the user only. */
export const token = (home: string): string => {
  const file = paths(home).token
  if (existsSync(file)) {
    const saved = readFileSync(file, "utf8").trim()
    if (saved.length > 0) return saved
  }
  const made = randomBytes(32).toString("base64url")
  writeFileSync(file, `${made}\n`, { mode: 0o600 })
  return made
}

export interface RunningNode {
  readonly url: string
  readonly tokenFile: string
  readonly pid: number
}

export const writeRunning = (home: string, node: RunningNode): void =>
  writeFileSync(paths(home).node, `${JSON.stringify(node)}\n`)

export const removeRunning = (home: string): void => rmSync(paths(home).node, { force: true })

/** The node a running `iii up` of this home announced, if its process is still alive. */
export const readRunning = (home: string): RunningNode | undefined => {
  try {
    const node = JSON.parse(readFileSync(paths(home).node, "utf8")) as RunningNode
    process.kill(node.pid, 0)
    return node
  } catch {
    return undefined
  }
}
