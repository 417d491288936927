import { readFileSync } from "node:fs"
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { parse } from "yaml"
import * as SC from "../src/ServiceComposition.js"

const repo = new URL("../../../", import.meta.url)
const readYaml = (path: string) => parse(readFileSync(new URL(path, repo), "utf8"))
const seed = readYaml("manifests/examples/user-service.yaml")

const issuesOf = (document: unknown) =>
  Either.match(SC.validate(document), { onLeft: (issues) => issues, onRight: () => [] })

const withComponent = (component: Record<string, unknown>) => ({
  ...seed,
  spec: { components: [{ name: "api", image: "api:v1", ...component }] }
})

describe("ServiceComposition", () => {
  it("decodes the seed example exactly as written, with thresholds parsed", () => {
    const decoded = Either.getOrThrow(SC.validate(seed))
    expect(decoded.metadata.name).toBe("user-service")
    expect(decoded.spec.components.map((c) => c.name)).toEqual(["auth", "profile"])
    expect(decoded.spec.components[0]?.replicas).toEqual({ min: 3, max: 10 })
    expect(decoded.spec.components[0]?.scalingPolicy).toEqual({
      metric: "p99_latency",
      threshold: { kind: "duration", milliseconds: 200, text: "200ms" }
    })
    expect(decoded.spec.observability).toEqual({
      metrics: ["p99_latency", "error_rate", "request_count"],
      traces: true,
      logs: { level: "info" }
    })
    expect(SC.encode(decoded)).toEqual(seed)
  })

  it("reports all four problems of the invalid fixture at once, with paths", () => {
    expect(issuesOf(readYaml("packages/core/test/fixtures/invalid-four-errors.yaml"))).toEqual([
      { path: "spec.components[0].replicas", message: "min (5) is greater than max (3)" },
      {
        path: "spec.components[1].image",
        message: expect.stringContaining('"Profile Service:latest" is not a valid image reference')
      },
      { path: "spec.components[1].scalingPolicy.threshold", message: '"-200ms" must not be negative' },
      {
        path: "spec.components[2].name",
        message: 'duplicate component name "auth" (also spec.components[0])'
      }
    ])
  })

  it("lists the known metrics when an unknown one is named", () => {
    const doc = {
      ...seed,
      spec: { ...seed.spec, observability: { metrics: ["p99_latency", "p98_latency"] } }
    }
    expect(issuesOf(doc)).toEqual([
      {
        path: "spec.observability.metrics[1]",
        message:
          'unknown metric "p98_latency"; known: p50_latency, p90_latency, p95_latency, p99_latency, error_rate, request_count, request_rate'
      }
    ])
  })

  it("checks that a threshold's unit fits its metric", () => {
    const doc = withComponent({
      replicas: { min: 1, max: 3 },
      scalingPolicy: { metric: "error_rate", threshold: "200ms" }
    })
    expect(issuesOf(doc)).toEqual([
      {
        path: "spec.components[0].scalingPolicy.threshold",
        message: 'error_rate needs a percentage such as 2% or 80%, got "200ms"'
      }
    ])
  })

  it("requires replicas from 1 up for a scaling policy", () => {
    const policy = { metric: "cpu", threshold: "80%" }
    expect(issuesOf(withComponent({ scalingPolicy: policy }))).toEqual([
      {
        path: "spec.components[0].replicas",
        message: "a scalingPolicy needs replicas {min, max} to scale between"
      }
    ])
    expect(
      issuesOf(withComponent({ scalingPolicy: policy, replicas: { min: 0, max: 2 } }))[0]?.message
    ).toContain("min must be at least 1")
    expect(issuesOf(withComponent({ replicas: { min: 0, max: 2 } }))).toEqual([])
  })

  it.each([
    "auth:v2.1",
    "registry.example.com:5000/team/auth:v2.1",
    "ghcr.io/org/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "nginx"
  ])("accepts the image reference %s", (image) => {
    expect(issuesOf(withComponent({ image }))).toEqual([])
  })

  it.each(["Auth:v2", "auth:", "auth image", ":v1", "auth:v1:v2"])(
    "rejects the image reference %s",
    (image) => {
      expect(issuesOf(withComponent({ image }))[0]?.path).toBe("spec.components[0].image")
    }
  )

  it("rejects unknown fields, wrong kinds and empty component lists with paths", () => {
    expect(issuesOf(withComponent({ replica: 3 }))).toEqual(
      [{ path: "spec.components[0].replica", message: "is unexpected, expected: ..." }].map((i) => ({
        ...i,
        message: expect.stringContaining("is unexpected")
      }))
    )
    expect(issuesOf({ ...seed, kind: "Deployment" })[0]?.path).toBe("kind")
    expect(issuesOf({ ...seed, spec: { components: [] } })).toEqual([
      { path: "spec.components", message: "a composition needs at least one component" }
    ])
  })

  it("keeps metadata the API server adds", () => {
    const fromCluster = { ...seed, metadata: { ...seed.metadata, managedFields: [{}], generation: 4 } }
    expect(Either.getOrThrow(SC.validate(fromCluster)).metadata).toMatchObject({
      generation: 4,
      managedFields: [{}]
    })
  })

  it("validates every document of a YAML stream and reports YAML syntax errors", () => {
    const text = `${readFileSync(new URL("manifests/examples/user-service.yaml", repo), "utf8")}---\nkind: [unclosed\n`
    const [first, second] = SC.fromYaml(text, "stream.yaml")
    expect(first && Either.isRight(first)).toBe(true)
    expect(second && Either.isLeft(second) && second.left.source).toBe("stream.yaml#2")
    expect(second && Either.isLeft(second) && second.left.issues[0]?.path).toBe("(yaml)")
  })

  it("takes a local command for `iii up` and refuses an empty one", () => {
    const decoded = Either.getOrThrow(SC.validate(withComponent({ command: ["node", "server.js"] })))
    expect(decoded.spec.components[0]?.command).toEqual(["node", "server.js"])
    expect(issuesOf(withComponent({ command: [] }))).toEqual([
      { path: "spec.components[0].command", message: "a command needs at least the program to run" }
    ])
    expect(issuesOf(withComponent({ command: "node server.js" }))).toEqual([
      { path: "spec.components[0].command", message: expect.stringContaining("Expected ReadonlyArray") }
    ])
  })

  // Found by fuzz:composition: yaml throws these while converting a parsed document, not as errors.
  it("reports an alias without its anchor, and an alias bomb, as YAML problems instead of throwing", () => {
    const [unresolved] = SC.fromYaml(
      "kind: ServiceComposition\nspec: { components: [{ image: *w }] }\n",
      "a.yaml"
    )
    expect(unresolved && Either.isLeft(unresolved) && unresolved.left.issues).toEqual([
      { path: "(yaml)", message: "Unresolved alias (the anchor must be set before the alias): w" }
    ])
    const bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for (let i = 1; i < 8; i++)
      bomb.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(", ")}]`
      )
    const [exploded] = SC.fromYaml(`${bomb.join("\n")}\n`, "bomb.yaml")
    expect(exploded && Either.isLeft(exploded) && exploded.left.issues[0]?.message).toContain("alias")
  })

  // Found by fuzz:composition: a `__proto__` key was passed through into the decoded metadata as its
  // prototype, so a namespace nobody validated could be read off it.
  it("refuses keys named __proto__, from YAML and from JSON, with their paths", () => {
    const [fromYaml] = SC.fromYaml(
      "apiVersion: iii.io/v1\nkind: ServiceComposition\nmetadata: { name: b, __proto__: { namespace: kube-system } }\n" +
        'spec: { components: [{ name: web, image: "web:1" }] }\n',
      "a.yaml"
    )
    expect(fromYaml && Either.isLeft(fromYaml) && fromYaml.left.issues).toEqual([
      { path: "metadata.__proto__", message: "a key named __proto__ is not allowed" }
    ])
    const fromJson = JSON.parse(
      JSON.stringify(seed).replace('"metadata":{', '"metadata":{"labels":{"__proto__":{"team":"x"}},')
    )
    expect(issuesOf(fromJson)).toEqual([
      { path: "metadata.labels.__proto__", message: "a key named __proto__ is not allowed" }
    ])
  })

  // Found by fuzz:composition: yaml turned such keys into their text, warning on stderr.
  it("refuses a list, map or alias used as a mapping key, naming its line", () => {
    const [listKey] = SC.fromYaml(
      "apiVersion: iii.io/v1\nkind: ServiceComposition\nmetadata:\n  name: b\n  labels: { ? [team] : x }\n",
      "a.yaml"
    )
    expect(listKey && Either.isLeft(listKey) && listKey.left.issues).toEqual([
      { path: "(yaml)", message: "a mapping key must be a plain value, not a list, map or alias, at line 5" }
    ])
    const [aliasKey] = SC.fromYaml("a: &k x\n*k : y\n", "b.yaml")
    expect(aliasKey && Either.isLeft(aliasKey) && aliasKey.left.issues[0]?.message).toContain("line 2")
  })

  it("refuses label and annotation keys, label values and a namespace the API server would refuse", () => {
    const metadata = (extra: object) => ({ ...seed, metadata: { ...seed.metadata, ...extra } })
    expect(
      issuesOf(metadata({ labels: { "[ team ]": "x", "example.com/team": "pay", "Bad_/x": "y" } }))
    ).toEqual([
      { path: "metadata.labels.[ team ]", message: expect.stringContaining("is not a qualified name") },
      { path: "metadata.labels.Bad_/x", message: expect.stringContaining("must be a DNS-1123 subdomain") }
    ])
    expect(issuesOf(metadata({ labels: { team: "a b" } }))).toEqual([
      { path: "metadata.labels.team", message: expect.stringContaining("is not a label value") }
    ])
    expect(
      issuesOf(metadata({ annotations: { [`${"a".repeat(64)}`]: "x", "iii.io/trace": "true" } }))
    ).toEqual([
      {
        path: `metadata.annotations.${"a".repeat(64)}`,
        message: expect.stringContaining("is not a qualified name")
      }
    ])
    expect(issuesOf(metadata({ namespace: "Kube" }))).toEqual([
      { path: "metadata.namespace", message: expect.stringContaining("is not a DNS-1123 label") }
    ])
    expect(issuesOf(metadata({ labels: { "app.kubernetes.io/part-of": "shop", empty: "" } }))).toEqual([])
  })

  it("formats paths as users write them", () => {
    expect(SC.formatPath(["spec", "components", 0, "replicas"])).toBe("spec.components[0].replicas")
  })
})
