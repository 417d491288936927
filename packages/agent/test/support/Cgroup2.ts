/** What tests that make cgroups need: this machine's cgroup v2 mount, if this process may write to it. */
import { accessSync, constants } from "node:fs"
import { findCgroup2Mount } from "../../src/internal/CgroupTree.js"

/** The cgroup v2 mount (pure v2 at /sys/fs/cgroup, or the hybrid layout's "unified") when writable. */
export const writableCgroup2Mount = (): string | undefined => {
  const mount = findCgroup2Mount()
  try {
    if (mount !== undefined) accessSync(mount, constants.W_OK)
    return mount
  } catch {
    return undefined
  }
}
