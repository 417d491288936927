import { createRequire } from "node:module"

/**
 * The version of the `iii` command: its package's, which every @iii/* package shares
 * (scripts/set-version.mjs); `iii --version`, the agent's hello to obs, and the images' labels and tags
 * (scripts/images.sh). Read at run time, from src/ or dist/ alike.
 */
export const version: string = (createRequire(import.meta.url)("../../package.json") as { version: string })
  .version
