/**
 * The dashboard in a real browser (Debian's Chromium through playwright-core), against a real node
 * with a token, seeded with the traffic of three services: the token prompt, services → service →
 * search → waterfall → logs, the live tail, the correlation-id box, the map, a reload of each
 * address, the keyboard, and dark mode. A screenshot of each page lands in .artifacts/dashboard/.
 */
import { execFileSync } from "node:child_process"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import type { Telemetry } from "@iii/core"
import { Option, Redacted } from "effect"
import type { Page } from "playwright-core"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RunningNode, startNode, TestAgent, tempDir } from "./fixtures/Node.js"
import { checkout, ms, nowNano } from "./fixtures/Shop.js"
import { artifacts, type Browser, chromiumMissing, launch } from "./support/Chromium.js"

if (chromiumMissing !== undefined) console.warn(`dashboard browser tests skipped: ${chromiumMissing}`)

const token = "dashboard-test-token"
const shots = artifacts("dashboard")

describe.skipIf(chromiumMissing !== undefined)("the dashboard in Chromium", () => {
  const site = tempDir()
  let node: RunningNode
  let browser: Browser
  let page: Page
  let agent: TestAgent
  let seq = 0
  const orders = Array.from({ length: 24 }, (_, i) =>
    checkout(i + 1, nowNano() - ms(120_000 - i * 4_000), i % 6 === 5)
  )
  const failed = orders[5]
  const send = async (
    spans: ReadonlyArray<Telemetry.Span>,
    logs: ReadonlyArray<Telemetry.LogRecord> = []
  ) => {
    seq++
    agent.send({ type: "batch", seq, spans, metrics: [], logs })
    await agent.ack(seq)
  }

  beforeAll(async () => {
    execFileSync(process.execPath, [
      fileURLToPath(new URL("../dashboard/build.mjs", import.meta.url)),
      "--out",
      site.path
    ])
    node = await startNode({ dashboardDir: site.path, token: Option.some(Redacted.make(token)) })
    agent = new TestAgent(node.url, { authorization: `Bearer ${token}` })
    await agent.hello("dashboard-agent")
    await send(
      orders.flatMap((o) => o.spans),
      orders.flatMap((o) => o.logs)
    )
    browser = await launch()
    page = browser.page
  }, 120_000)
  afterAll(async () => {
    agent?.close()
    await browser?.close()
    await node?.stop()
    site.remove()
  })

  const shot = (name: string) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true })

  it("asks for the token once, then shows every service with its traffic", async () => {
    await page.goto(node.url)
    const dialog = page.getByRole("dialog", { name: "This obs node needs a token" })
    await dialog.waitFor()
    await shot("token")
    await dialog.getByLabel("Token").fill(token)
    await dialog.getByRole("button", { name: "Use this token" }).click()
    const rows = page.locator("table.grid tbody tr")
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(3)
    expect(await page.locator("tbody th").allInnerTexts()).toEqual(["catalog", "frontend", "payments"])
    const paymentsRow = page.locator('tr[data-service="payments"]')
    expect(await paymentsRow.locator('[data-label="rate"]').innerText()).toMatch(/\/s$/)
    expect(await paymentsRow.locator('[data-label="errors"]').innerText()).toBe("17%")
    expect(await page.locator(".sparkline canvas").count()).toBeGreaterThanOrEqual(6)
    await shot("services")
    // Kept: a reload asks nothing.
    await page.reload()
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(3)
    expect(await page.getByRole("dialog").count()).toBe(0)
  })

  it("a service: RED charts and its routes", async () => {
    await page.getByRole("link", { name: "payments" }).first().click()
    await page.waitForURL(/\/services\/payments\?window=15m$/)
    await page.getByRole("heading", { name: "Routes" }).waitFor()
    expect(await page.locator("table.grid tbody th").allInnerTexts()).toEqual(["/charges"])
    expect(await page.locator("figure.chart canvas").count()).toBe(3)
    await shot("service")
  })

  it("search by service and status keeps its filters in the address, and survives a reload", async () => {
    await page.goto(`${node.url}/search`)
    await page.getByLabel("Service", { exact: true }).selectOption("payments")
    await page.getByLabel("Status", { exact: true }).selectOption("5xx")
    await page.getByRole("button", { name: "Search" }).click({ timeout: 5000 })
    await page.waitForURL(/\/search\?service=payments&status=5xx$/)
    const results = page.locator("table.grid tbody tr")
    await expect.poll(() => results.count(), { timeout: 10_000 }).toBe(4)
    await page.reload()
    await expect.poll(() => results.count(), { timeout: 10_000 }).toBe(4)
    expect(await page.getByLabel("Status", { exact: true }).inputValue()).toBe("5xx")
    await shot("search")
  })

  it("a trace: the waterfall across services, a span's details, and the trace's logs", async () => {
    await page.goto(`${node.url}/search?correlationId=${failed?.correlationId}`)
    await page.getByRole("link", { name: /frontend POST \/checkout/ }).click()
    await page.waitForURL(`${node.url}/traces/${failed?.traceId}`)
    const rows = page.locator(".span-row")
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(5)
    expect(await page.locator(".summary").innerText()).toContain("5 spans across 3 services")
    // The tree: the server span, then its calls, each followed by what answered it.
    const names = await rows.locator(".span-name").allInnerTexts()
    expect(names.map((n) => n.toLowerCase().split(/\s+/).slice(0, 3).join(" "))).toEqual([
      "frontend server post",
      "frontend client get",
      "catalog server get",
      "frontend client post",
      "payments server post"
    ])
    await rows.nth(4).click()
    await expect.poll(() => page.locator(".detail h2").innerText()).toContain("payments")
    const logs = page.getByRole("table", { name: "Logs of this trace" }).locator("tbody tr")
    expect(await logs.count()).toBe(2)
    expect(await logs.first().innerText()).toContain("card processor timed out")
    expect(await page.locator("tr.highlight").count()).toBe(1)
    await shot("trace")
    await page.reload()
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(5)
  })

  it("a span whose parent was not captured hangs under the call that encloses it, marked ≈", async () => {
    const order = checkout(800, nowNano() - ms(5_000), false)
    // As in eBPF mode today: payments' server span names the forwarded context as its parent.
    const spans = order.spans.map((s) =>
      s.service === "payments" ? { ...s, parentSpanId: "00000000000000aa" as never } : s
    )
    await send(spans, order.logs)
    await page.goto(`${node.url}/traces/${order.traceId}`)
    const rows = page.locator(".span-row")
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(5)
    const last = rows.nth(4)
    expect(await last.locator(".inferred").count()).toBe(1)
    expect(await last.locator(".span-name").getAttribute("style")).toContain("padding-left: 36px")
  })

  it("the keyboard reaches everything: skip link first, then a span row by Tab and Enter", async () => {
    await page.goto(`${node.url}/traces/${failed?.traceId}`)
    await page.locator(".span-row").first().waitFor()
    await page.keyboard.press("Tab")
    expect(await page.evaluate("document.activeElement?.textContent")).toBe("Skip to content")
    await page.locator(".span-row").nth(2).focus()
    await page.keyboard.press("Enter")
    expect(await page.locator(".span-row").nth(2).getAttribute("aria-pressed")).toBe("true")
    expect(await page.locator(".detail h2").innerText()).toContain("catalog")
  })

  it("the correlation-id box shows the id's traces, logs and RED", async () => {
    await page.getByLabel("Correlation id or trace id", { exact: true }).fill(failed?.correlationId ?? "")
    await page.keyboard.press("Enter")
    await page.waitForURL(`${node.url}/correlate/${failed?.correlationId}`)
    await page.getByRole("heading", { name: "RED around these requests" }).waitFor()
    expect(await page.locator("ul.trace-list li").count()).toBe(1)
    expect(
      await page
        .getByRole("table", { name: /Logs with correlation id/ })
        .locator("tbody tr")
        .count()
    ).toBe(2)
    await shot("correlate")
  })

  it("the live tail shows new requests as they arrive, with the filters of /v1/tail", async () => {
    await page.goto(`${node.url}/tail?service=payments`)
    await page.getByRole("status").filter({ hasText: "live" }).waitFor({ timeout: 10_000 })
    const fresh = checkout(900, nowNano(), true)
    await send(fresh.spans)
    const rows = page.locator("table.grid tbody tr")
    await expect.poll(() => rows.count(), { timeout: 10_000 }).toBe(1)
    expect(await rows.first().innerText()).toContain("payments")
    expect(await rows.first().innerText()).toContain("502")
    expect(await page.getByLabel("Service", { exact: true }).inputValue()).toBe("payments")
    await shot("tail")
  })

  it("the map: an edge from frontend to each service it calls, with rate and errors", async () => {
    await page.goto(`${node.url}/map`)
    await page.locator("svg.map").waitFor()
    const edges = page
      .getByRole("heading", { name: "Calls" })
      .locator("xpath=following-sibling::table[1]")
      .locator("tbody tr")
    expect(await edges.allInnerTexts()).toEqual([
      expect.stringMatching(/^frontend\s+catalog\s+\S+\/s\s+0%/),
      expect.stringMatching(/^frontend\s+payments\s+\S+\/s\s+\d+%/)
    ])
    await shot("map")
  })

  it("reads in dark mode", async () => {
    const dark = await launch({ colorScheme: "dark" })
    try {
      await dark.page.goto(`${node.url}/#token=${token}`)
      await dark.page.locator("table.grid tbody tr").first().waitFor({ timeout: 10_000 })
      // The token from the link is kept, and the link's fragment is gone.
      expect(new URL(dark.page.url()).hash).toBe("")
      const background = await dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
      expect(background).toBe("rgb(17, 20, 24)")
      await dark.page.screenshot({ path: join(shots, "services-dark.png"), fullPage: true })
      await dark.page.goto(`${node.url}/traces/${failed?.traceId}`)
      await dark.page.locator(".span-row").first().waitFor()
      await dark.page.screenshot({ path: join(shots, "trace-dark.png"), fullPage: true })
    } finally {
      await dark.close()
    }
  })
})
