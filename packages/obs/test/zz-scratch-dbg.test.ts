import { mkdtempSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { it } from "vitest"
import { openLayout } from "../src/internal/LmdbLayout.js"
import { span } from "./fixtures/Spans.js"

it("dbg", async () => {
  const l = openLayout({ path: mkdtempSync(join(tmpdir(), "dbg-")) })
  const s = span({ trace: 33 })
  await l.spans.put([s.traceId, s.spanId], s)
  console.log("keys", Array.from(l.spans.getKeys({ start: [s.traceId], end: [s.traceId, "\uffff"], limit: 1 })))
  console.log("keys nolimit", Array.from(l.spans.getKeys({ start: [s.traceId], end: [s.traceId, "\uffff"] })))
  console.log("range", Array.from(l.spans.getRange({ start: [s.traceId], end: [s.traceId, "\uffff"], limit: 1 })).length)
  console.log("all", Array.from(l.spans.getKeys()))
})
