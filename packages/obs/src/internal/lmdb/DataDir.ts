/**
 * The data directory, made ready before LMDB opens it: created one component at a time, checked to
 * be a directory this process can write in. lmdb creates a missing directory with Node's recursive
 * `mkdirSync`, which never returns for some paths (under /proc it spins a core forever, deaf to
 * SIGTERM); this walk uses single, asynchronous mkdir calls, so every failure is an error naming the
 * directory and the cause, and the process stays responsive to signals while it runs.
 *
 * Once open, the directory is watched: LMDB keeps writing to the files it opened even after they
 * were deleted or the directory replaced, and everything acknowledged from then on would be lost at
 * the next restart. `identify` records what was opened, `changed` says whether the path still
 * leads there.
 */
import { constants, statSync } from "node:fs"
import { mkdir, open, stat, unlink } from "node:fs/promises"
import { dirname, join, resolve } from "node:path"
import { Errors } from "@iii/core"
import { Effect } from "effect"
import { DataDirError } from "../../Errors.js"

const codeOf = (e: unknown) => (typeof e === "object" && e !== null && "code" in e ? String(e.code) : "")

/** The deepest existing ancestor of `path` (itself if it exists) and the components missing below it. */
const existingAncestor = async (path: string) => {
  const missing: Array<string> = []
  let at = path
  for (;;) {
    try {
      const found = await stat(at)
      return { at, found, missing }
    } catch (e) {
      const parent = dirname(at)
      // ENOTDIR: a component above is a file; the walk up finds it and says so.
      if ((codeOf(e) !== "ENOENT" && codeOf(e) !== "ENOTDIR") || parent === at) throw e
      missing.unshift(at)
      at = parent
    }
  }
}

const prepareAsync = async (path: string, fail: (reason: string) => Error): Promise<void> => {
  const absolute = resolve(path)
  let ancestor: Awaited<ReturnType<typeof existingAncestor>>
  try {
    ancestor = await existingAncestor(absolute)
  } catch (e) {
    throw fail(`cannot look it up: ${Errors.messageOf(e)}`)
  }
  if (!ancestor.found.isDirectory())
    throw fail(ancestor.at === absolute ? "it is not a directory" : `${ancestor.at} is not a directory`)
  for (const component of ancestor.missing) {
    try {
      await mkdir(component)
    } catch (e) {
      if (codeOf(e) !== "EEXIST") throw fail(`cannot create it: ${Errors.messageOf(e)}`)
      if (!(await stat(component)).isDirectory()) throw fail(`${component} is not a directory`)
    }
  }
  // Root passes every permission check, and a read-only mount only shows when writing: try it.
  const probe = `${absolute}/.iii-write-check-${process.pid}`
  try {
    const handle = await open(probe, constants.O_CREAT | constants.O_EXCL | constants.O_WRONLY)
    await handle.close()
    await unlink(probe)
  } catch (e) {
    throw fail(`cannot write in it: ${Errors.messageOf(e)}`)
  }
}

/** Creates `path` if missing and checks it is a writable directory; fails naming it and the cause. */
export const prepare = (path: string): Effect.Effect<void, DataDirError> =>
  Effect.tryPromise({
    try: () => prepareAsync(path, (reason) => new DataDirError({ path, reason })),
    catch: (e) => (e instanceof DataDirError ? e : new DataDirError({ path, reason: Errors.messageOf(e) }))
  })

/** The device and inode of the directory and of LMDB's files, as opened. */
export interface Identity {
  readonly entries: ReadonlyArray<{ readonly path: string; readonly dev: number; readonly ino: number }>
}

const watched = (path: string) => [path, join(path, "data.mdb"), join(path, "lock.mdb")]

/** What `path` and its LMDB files are now (call right after opening them). */
export const identify = (path: string): Identity => ({
  entries: watched(path).map((p) => {
    const { dev, ino } = statSync(p)
    return { path: p, dev, ino }
  })
})

/** Undefined while the path still leads to what was opened; otherwise what happened to it. */
export const changed = (identity: Identity): string | undefined => {
  for (const { path, dev, ino } of identity.entries) {
    let now: { dev: number; ino: number }
    try {
      now = statSync(path)
    } catch (e) {
      return `${path} is gone (${codeOf(e) || Errors.messageOf(e)}): it was deleted or moved while the node ran`
    }
    if (now.dev !== dev || now.ino !== ino)
      return `${path} is no longer the file the node opened (device ${dev}, inode ${ino}): it was replaced while the node ran`
  }
  return undefined
}
