/**
 * Debian's Chromium driven by playwright-core, for tests that look at the dashboard as a user does.
 * No browser download: `bash scripts/install.sh --test` installs the `chromium` package; without it
 * the browser tests are skipped with that reason. Each launch gets a fresh profile directory.
 * Screenshots go to `.artifacts/<suite>/` at the repository root (gitignored), to be looked at.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { BrowserContext, Page } from "playwright-core"

export const chromiumPath = "/usr/bin/chromium"

/** Why browser tests cannot run here, or undefined when they can. */
export const chromiumMissing: string | undefined = existsSync(chromiumPath)
  ? undefined
  : `${chromiumPath} is missing (Debian's chromium package; bash scripts/install.sh --test installs it)`

// The flags this machine's closed network needs: without the background-networking ones Chromium
// keeps trying to reach Google's hosts.
const flags = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync"
]

export interface Browser {
  readonly context: BrowserContext
  readonly page: Page
  readonly close: () => Promise<void>
}

export const launch = async (options: { colorScheme?: "light" | "dark" } = {}): Promise<Browser> => {
  const { chromium } = await import("playwright-core")
  const profile = mkdtempSync(join(tmpdir(), "iii-chromium-"))
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: flags,
    viewport: { width: 1280, height: 860 },
    colorScheme: options.colorScheme ?? "light"
  })
  const page = context.pages()[0] ?? (await context.newPage())
  return {
    context,
    page,
    close: async () => {
      await context.close()
      rmSync(profile, { recursive: true, force: true })
    }
  }
}

const repo = fileURLToPath(new URL("../../../../", import.meta.url))

/** Where a suite's screenshots go (created, gitignored). */
export const artifacts = (suite: string): string => {
  const dir = join(repo, ".artifacts", suite)
  mkdirSync(dir, { recursive: true })
  return dir
}
