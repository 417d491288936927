/**
 * `node:http`, loaded with `require` rather than `import`: Node's ES module facade of a built-in reads
 * every export, and reading `node:http`'s lazy `WebSocket`, `CloseEvent` and `MessageEvent` loads the
 * undici bundled in Node (~3.5 MB of RSS in every agent, which uses none of them; packages/agent
 * README, "Memory").
 */
import type * as http from "node:http"
import { createRequire } from "node:module"

export const Http: typeof http = createRequire(import.meta.url)("node:http")
