/**
 * The `ServiceComposition` custom resource (`iii.io/v1`): a set of services, how they scale, and what
 * to observe. This schema is the single source of truth: the CRD's OpenAPI schema is generated from
 * it (`Crd.ts`), and the CLI, the controller and obs all decode documents with `decode`.
 *
 * Every field carries a description, which becomes `kubectl explain` text.
 */
import { Either, ParseResult, Schema } from "effect"
import { isAlias, isCollection, LineCounter, parseAllDocuments, visit } from "yaml"
import { InvalidDocument, messageOf } from "./Errors.js"
import * as Quantity from "./Quantity.js"

export const group = "iii.io"
export const version = "v1"
export const apiVersion = `${group}/${version}`
export const kind = "ServiceComposition"
export const plural = "servicecompositions"

/**
 * Rules the CRD enforces with CEL (`x-kubernetes-validations`) because OpenAPI cannot express them;
 * the same rules are Schema filters here, so the CLI reports them before the API server would.
 */
export const CelRules = Symbol.for("@iii/core/CelRules")
export interface CelRule {
  readonly rule: string
  readonly message: string
}

const dns1123Label = Schema.String.pipe(
  Schema.pattern(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, {
    message: (issue) =>
      `${JSON.stringify(issue.actual)} is not a DNS-1123 label (lowercase letters, digits and '-', starting and ending with a letter or digit)`
  }),
  Schema.maxLength(63, { message: () => "must be at most 63 characters (a DNS-1123 label)" })
)

const dns1123Subdomain = Schema.String.pipe(
  Schema.pattern(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, {
    message: (issue) => `${JSON.stringify(issue.actual)} is not a DNS-1123 subdomain`
  }),
  Schema.maxLength(253)
)

// Kubernetes' qualified name ([DNS-1123 subdomain prefix/]name), the form of label and annotation keys.
// Its name part and a non-empty label value: at most 63 characters of this form.
const isNamePart = (s: string): boolean =>
  s.length <= 63 && /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/.test(s)
const isDns1123Subdomain = Schema.is(dns1123Subdomain)
const qualifiedNameProblem = (key: string): string | undefined => {
  const slash = key.indexOf("/")
  const [prefix, name] = slash === -1 ? [undefined, key] : [key.slice(0, slash), key.slice(slash + 1)]
  if (prefix !== undefined && !isDns1123Subdomain(prefix))
    return `${JSON.stringify(key)}: the prefix before '/' must be a DNS-1123 subdomain`
  if (!isNamePart(name))
    return `${JSON.stringify(key)} is not a qualified name (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, after an optional prefix/)`
  return undefined
}
// Keys checked by a filter on the record, not its key schema, so each bad key is named with its
// problem instead of reported as an unexpected property.
const withQualifiedKeys = <A, I>(record: Schema.Schema<Record<string, A>, Record<string, I>>) =>
  record.pipe(
    Schema.filter((entries) =>
      Object.keys(entries).flatMap((key) => {
        const message = qualifiedNameProblem(key)
        return message === undefined ? [] : [{ path: [key], message }]
      })
    )
  )
const LabelValue = Schema.String.pipe(
  Schema.filter(
    (value) =>
      value === "" ||
      isNamePart(value) ||
      `${JSON.stringify(value)} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit)`
  )
)

// The grammar of distribution/reference: [registry[:port]/]path[:tag][@digest], lowercase path.
const imageReference =
  /^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$/

export const Image = Schema.String.pipe(
  Schema.pattern(imageReference, {
    message: (issue) =>
      `${JSON.stringify(issue.actual)} is not a valid image reference ([registry[:port]/]name[:tag][@digest], name in lowercase)`
  })
).annotations({ description: "Container image reference, e.g. registry.example.com/team/auth:v2.1." })

const NonNegativeInt = Schema.Number.pipe(Schema.int(), Schema.nonNegative())

export const Replicas = Schema.Struct({
  min: NonNegativeInt.annotations({ description: "Fewest replicas; the Deployment starts here." }),
  max: NonNegativeInt.pipe(Schema.greaterThanOrEqualTo(1)).annotations({
    description: "Most replicas the autoscaler may run."
  })
})
  .pipe(Schema.filter((r) => r.min <= r.max || `min (${r.min}) is greater than max (${r.max})`))
  .annotations({
    description: "Replica bounds. Without a scalingPolicy the component runs `min` replicas.",
    [CelRules]: [
      { rule: "self.min <= self.max", message: "min is greater than max" }
    ] satisfies ReadonlyArray<CelRule>
  })
export type Replicas = typeof Replicas.Type

/** The metric a scaling policy watches, and the kind of threshold it takes. */
export const scalingMetrics = {
  p99_latency: "duration",
  p95_latency: "duration",
  p50_latency: "duration",
  error_rate: "percentage",
  request_rate: "rate",
  cpu: "percentage"
} as const satisfies Record<string, Quantity.QuantityKind>
export type ScalingMetric = keyof typeof scalingMetrics

const literalOf = <const K extends string>(names: ReadonlyArray<K>, what: string) =>
  Schema.Literal(...(names as [K, ...Array<K>])).annotations({
    // Override: a union would otherwise say "Expected x, actual y" once per member.
    message: (issue) => ({
      message: `unknown ${what} ${JSON.stringify(issue.actual)}; known: ${names.join(", ")}`,
      override: true
    })
  })

export const ScalingMetric = literalOf(Object.keys(scalingMetrics) as Array<ScalingMetric>, "scaling metric")

const unitPatterns: Record<Quantity.QuantityKind, string> = {
  duration: "(ns|us|µs|ms|s|m)",
  percentage: "%",
  rate: "(rps|rpm)"
}

// One CEL rule per kind of threshold: which metrics take it, and the unit it must end in.
const unitRules = (Object.keys(unitPatterns) as Array<Quantity.QuantityKind>).map((kind) => {
  const metrics = (Object.keys(scalingMetrics) as Array<ScalingMetric>).filter(
    (m) => scalingMetrics[m] === kind
  )
  return {
    rule: `!(self.metric in [${metrics.map((m) => `'${m}'`).join(", ")}]) || self.threshold.matches('^[0-9]+(\\\\.[0-9]+)?\\\\s*${unitPatterns[kind]}$')`,
    message: `the threshold of ${metrics.join(" / ")} must be ${Quantity.examples[kind]}`
  }
})

export const ScalingPolicy = Schema.Struct({
  metric: ScalingMetric.annotations({
    description: `The metric to scale on: ${Object.keys(scalingMetrics).join(", ")}.`
  }),
  threshold: Quantity.FromString.annotations({
    description:
      "Target value. Latencies take a duration (200ms), error_rate and cpu a percentage (2%, 80%), request_rate a rate per replica (150rps)."
  })
})
  .pipe(
    Schema.filter((p) => {
      const expected = scalingMetrics[p.metric]
      return (
        p.threshold.kind === expected ||
        ({
          path: ["threshold"],
          message: `${p.metric} needs ${Quantity.examples[expected]}, got "${p.threshold.text}"`
        } as const)
      )
    })
  )
  .annotations({
    description: "Scale between replicas.min and replicas.max to keep the metric at the threshold.",
    [CelRules]: unitRules satisfies ReadonlyArray<CelRule>
  })
export type ScalingPolicy = typeof ScalingPolicy.Type

export const Port = Schema.Struct({
  name: Schema.optional(dns1123Label.annotations({ description: "Port name, unique within the component." })),
  port: Schema.Number.pipe(Schema.int(), Schema.between(1, 65535)).annotations({
    description: "Port the Service exposes and the container listens on."
  }),
  protocol: Schema.optional(
    Schema.Literal("TCP", "UDP", "SCTP").annotations({ description: "TCP (default), UDP or SCTP." })
  )
}).annotations({ description: "A port of the component." })

export const EnvVar = Schema.Struct({
  name: Schema.String.pipe(Schema.pattern(/^[-._a-zA-Z][-._a-zA-Z0-9]*$/)).annotations({
    description: "Environment variable name."
  }),
  value: Schema.String.annotations({ description: "Its value." })
}).annotations({ description: "An environment variable for the component's container." })

const ResourceList = Schema.Struct({
  cpu: Schema.optional(Schema.String.annotations({ description: "CPU quantity, e.g. 250m." })),
  memory: Schema.optional(Schema.String.annotations({ description: "Memory quantity, e.g. 256Mi." }))
})

export const Resources = Schema.Struct({
  requests: Schema.optional(ResourceList.annotations({ description: "What the scheduler reserves." })),
  limits: Schema.optional(ResourceList.annotations({ description: "The most the container may use." }))
}).annotations({ description: "Compute resources of the component's container." })

export const Ingress = Schema.Struct({
  host: dns1123Subdomain.annotations({ description: "Host name the Ingress answers for." }),
  path: Schema.optionalWith(
    Schema.String.pipe(Schema.startsWith("/")).annotations({ description: "Path prefix; defaults to /." }),
    { default: () => "/" }
  )
}).annotations({ description: "Expose the component outside the cluster through an Ingress." })

export const Component = Schema.Struct({
  name: dns1123Label.annotations({
    description: "Component name, unique in the composition; children are named <composition>-<component>."
  }),
  image: Image,
  replicas: Schema.optional(Replicas),
  scalingPolicy: Schema.optional(ScalingPolicy),
  ports: Schema.optional(Schema.Array(Port).annotations({ description: "Ports; defaults to 8080/TCP." })),
  env: Schema.optional(Schema.Array(EnvVar).annotations({ description: "Environment variables." })),
  resources: Schema.optional(Resources),
  ingress: Schema.optional(Ingress),
  command: Schema.optional(
    Schema.Array(
      Schema.String.pipe(Schema.minLength(1)).annotations({ description: "The program, then each argument." })
    )
      .pipe(Schema.minItems(1, { message: () => "a command needs at least the program to run" }))
      .annotations({
        description:
          "For local runs only (`iii up`): the program and its arguments that start this component on a developer's machine, run from the composition file's directory with PORT set to the port to listen on. Ignored in a cluster, where the image runs."
      })
  )
})
  .pipe(
    Schema.filter((c) => {
      if (c.scalingPolicy === undefined) return true
      if (c.replicas === undefined) {
        return { path: ["replicas"], message: "a scalingPolicy needs replicas {min, max} to scale between" }
      }
      return (
        c.replicas.min >= 1 || {
          path: ["replicas"],
          message: "min must be at least 1 when a scalingPolicy is set (an autoscaler cannot scale from zero)"
        }
      )
    })
  )
  .annotations({
    description:
      "One service of the composition: a Deployment, a Service and optionally an Ingress and an autoscaler.",
    [CelRules]: [
      { rule: "!has(self.scalingPolicy) || has(self.replicas)", message: "a scalingPolicy needs replicas" },
      {
        rule: "!has(self.scalingPolicy) || !has(self.replicas) || self.replicas.min >= 1",
        message: "min must be at least 1 when a scalingPolicy is set"
      }
    ] satisfies ReadonlyArray<CelRule>
  })
export type Component = typeof Component.Type

/** The metric names `spec.observability.metrics` accepts. */
export const observableMetrics = [
  "p50_latency",
  "p90_latency",
  "p95_latency",
  "p99_latency",
  "error_rate",
  "request_count",
  "request_rate"
] as const
export type ObservableMetric = (typeof observableMetrics)[number]

export const LogLevel = literalOf(["trace", "debug", "info", "warn", "error"] as const, "log level")

export const Observability = Schema.Struct({
  metrics: Schema.optional(
    Schema.Array(literalOf(observableMetrics, "metric")).annotations({
      description: `RED metrics to record: ${observableMetrics.join(", ")}.`
    })
  ),
  traces: Schema.optional(Schema.Boolean.annotations({ description: "Record a span per request." })),
  propagation: Schema.optional(
    Schema.Boolean.annotations({
      description:
        "eBPF (node agent): the kernel inserts traceparent into the components' outbound HTTP/1.x requests, so one trace spans the services. Changes bytes on the wire; default false."
    })
  ),
  logs: Schema.optional(
    Schema.Struct({
      level: LogLevel.annotations({ description: "Lowest level kept: trace, debug, info, warn or error." })
    }).annotations({ description: "Capture the components' stdout/stderr as logs." })
  )
}).annotations({ description: "What the iii agent records for every component." })
export type Observability = typeof Observability.Type

const maxComponents = 64

const duplicateNames = (components: ReadonlyArray<unknown>) => {
  const firstIndex = new Map<string, number>()
  const issues: Array<{ path: ReadonlyArray<PropertyKey>; message: string }> = []
  components.forEach((component, index) => {
    const name = (component as { name?: unknown } | null)?.name
    if (typeof name !== "string") return
    const first = firstIndex.get(name)
    if (first === undefined) firstIndex.set(name, index)
    else
      issues.push({
        path: [index, "name"],
        message: `duplicate component name "${name}" (also spec.components[${first}])`
      })
  })
  return issues
}

export const Spec = Schema.Struct({
  components: Schema.Array(Component)
    .pipe(
      Schema.minItems(1, { message: () => "a composition needs at least one component" }),
      Schema.maxItems(maxComponents),
      Schema.filter((components) => duplicateNames(components))
    )
    .annotations({ description: "The services of this composition, keyed by name." }),
  observability: Schema.optional(Observability)
}).annotations({ description: "Desired state of the composition." })
export type Spec = typeof Spec.Type

export const Metadata = Schema.Struct(
  {
    name: dns1123Subdomain.annotations({ description: "Name of the composition." }),
    namespace: Schema.optional(dns1123Label),
    uid: Schema.optional(Schema.String),
    generation: Schema.optional(Schema.Number),
    resourceVersion: Schema.optional(Schema.String),
    // The API server refuses other keys and values; `iii validate` says so before it.
    labels: Schema.optional(withQualifiedKeys(Schema.Record({ key: Schema.String, value: LabelValue }))),
    annotations: Schema.optional(
      withQualifiedKeys(Schema.Record({ key: Schema.String, value: Schema.String }))
    )
  },
  // The API server adds more (managedFields, creationTimestamp, …); they pass through untouched.
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)

export const ConditionType = Schema.Literal("Ready", "Progressing", "Degraded")
export type ConditionType = typeof ConditionType.Type

/** A condition in the shape Kubernetes API conventions define (metav1.Condition). */
const Generation = NonNegativeInt.annotations({
  description: "The metadata.generation this was computed from."
})

export const Condition = Schema.Struct({
  type: ConditionType.annotations({ description: "Ready, Progressing or Degraded." }),
  status: Schema.Literal("True", "False", "Unknown").annotations({ description: "True, False or Unknown." }),
  observedGeneration: Schema.optional(Generation),
  lastTransitionTime: Schema.String.annotations({ description: "RFC 3339 time the status last changed." }),
  reason: Schema.String.annotations({ description: "CamelCase reason for the last transition." }),
  message: Schema.String.annotations({ description: "Human-readable details." })
}).annotations({ description: "An observation of the composition's state." })
export type Condition = typeof Condition.Type

export const ComponentStatus = Schema.Struct({
  name: Schema.String.annotations({ description: "Component name." }),
  desiredReplicas: NonNegativeInt.annotations({ description: "Replicas the Deployment asks for." }),
  readyReplicas: NonNegativeInt.annotations({ description: "Replicas that are ready." })
}).annotations({ description: "Replica counts of one component." })
export type ComponentStatus = typeof ComponentStatus.Type

export const Status = Schema.Struct({
  observedGeneration: Schema.optional(Generation),
  conditions: Schema.optional(
    Schema.Array(Condition).annotations({ description: "Ready, Progressing and Degraded." })
  ),
  components: Schema.optional(Schema.Array(ComponentStatus).annotations({ description: "Per component." })),
  componentCount: Schema.optional(NonNegativeInt.annotations({ description: "Number of components." })),
  ready: Schema.optional(Schema.String.annotations({ description: "Ready components over all, e.g. 2/3." }))
}).annotations({ description: "Observed state, written by the controller." })
export type Status = typeof Status.Type

export const ServiceComposition = Schema.Struct({
  apiVersion: Schema.Literal(apiVersion).annotations({ description: `Always ${apiVersion}.` }),
  kind: Schema.Literal(kind).annotations({ description: `Always ${kind}.` }),
  metadata: Metadata.annotations({ description: "Standard object metadata." }),
  spec: Spec,
  status: Schema.optional(Status)
}).annotations({
  identifier: "ServiceComposition",
  description: "A set of services, how they scale and what to observe, reconciled by the iii controller."
})
export type ServiceComposition = typeof ServiceComposition.Type
export type Encoded = typeof ServiceComposition.Encoded

export interface Issue {
  readonly path: string
  readonly message: string
}

/** `["spec", "components", 0, "replicas"]` → `spec.components[0].replicas` */
export const formatPath = (path: ReadonlyArray<PropertyKey>): string =>
  path.reduce<string>(
    (out, key) =>
      typeof key === "number" ? `${out}[${key}]` : out === "" ? String(key) : `${out}.${String(key)}`,
    ""
  )

/**
 * Keys named `__proto__` anywhere in the document. YAML and JSON.parse make them ordinary own keys,
 * but the decoder's pass-through of unknown metadata assigns them, which sets the decoded object's
 * prototype: `metadata: { name: a, __proto__: { namespace: kube-system } }` would then read a
 * namespace nobody validated. Refused, with their paths, before decoding.
 */
const prototypeKeys = (
  value: unknown,
  path: ReadonlyArray<PropertyKey>,
  seen = new WeakSet<object>() // YAML aliases can make a document refer to itself
): Array<Issue> => {
  if (typeof value !== "object" || value === null || seen.has(value)) return []
  seen.add(value)
  if (Array.isArray(value)) return value.flatMap((item, i) => prototypeKeys(item, [...path, i], seen))
  return Object.keys(value).flatMap((key) =>
    key === "__proto__"
      ? [{ path: formatPath([...path, key]), message: "a key named __proto__ is not allowed" }]
      : prototypeKeys((value as Record<string, unknown>)[key], [...path, key], seen)
  )
}

const decodeAll = Schema.decodeUnknownEither(ServiceComposition, { errors: "all", onExcessProperty: "error" })

/**
 * Decodes a document, reporting every problem at once. Unique component names are checked on the
 * raw input as well, so a duplicate is reported even when other fields of those components are wrong.
 */
export const validate = (input: unknown): Either.Either<ServiceComposition, ReadonlyArray<Issue>> => {
  const forbidden = prototypeKeys(input, [])
  if (forbidden.length > 0) return Either.left(forbidden)
  const decoded = decodeAll(input)
  if (Either.isRight(decoded)) return Either.right(decoded.right)
  const all = ParseResult.ArrayFormatter.formatErrorSync(decoded.left).map((i) => ({
    path: formatPath(i.path),
    message: i.message
  }))
  // An optional field is a union with `undefined`, so a bad value also fails the `undefined` member;
  // that half says nothing the real issue at the same path does not.
  const issues = all.filter(
    (i) =>
      !(
        i.message.startsWith("Expected undefined, actual") &&
        all.some((o) => o !== i && o.path.startsWith(i.path))
      )
  )
  const components = (input as { spec?: { components?: unknown } } | null)?.spec?.components
  if (Array.isArray(components)) {
    for (const dup of duplicateNames(components)) {
      const issue = { path: formatPath(["spec", "components", ...dup.path]), message: dup.message }
      if (!issues.some((i) => i.path === issue.path && i.message === issue.message)) issues.push(issue)
    }
  }
  return Either.left(issues)
}

/** `validate` failing with `InvalidDocument` (an Either, so it also runs as an Effect); `source` names the document. */
export const decode = (input: unknown, source = "document") =>
  Either.mapLeft(validate(input), (issues) => new InvalidDocument({ source, issues }))

export const encode = Schema.encodeSync(ServiceComposition)

/**
 * Validates every document of a (multi-document) YAML text; `source` names it in messages, each
 * document after the first as `source#N`. YAML syntax errors come back as issues too.
 */
export const fromYaml = (
  text: string,
  source: string
): ReadonlyArray<Either.Either<ServiceComposition, InvalidDocument>> => {
  const lines = new LineCounter()
  return parseAllDocuments(text, { lineCounter: lines })
    .filter((doc) => doc.contents !== null || doc.errors.length > 0)
    .map((doc, index, docs) => {
      const name = docs.length > 1 ? `${source}#${index + 1}` : source
      const yamlProblems = (messages: ReadonlyArray<string>) =>
        Either.left(
          new InvalidDocument({
            source: name,
            issues: messages.map((m) => ({ path: "(yaml)", message: m.split("\n")[0] ?? m }))
          })
        )
      if (doc.errors.length > 0) return yamlProblems(doc.errors.map((e) => e.message))
      // yaml would turn a list or map used as a key into its text (with a Node warning on stderr), so
      // `? [a] : b` would pass as a key named "[ a ]"; no field of a composition has such a key.
      const complexKeys: Array<string> = []
      visit(doc, {
        Pair: (_, pair) => {
          if (isCollection(pair.key) || isAlias(pair.key))
            complexKeys.push(
              `a mapping key must be a plain value, not a list, map or alias, at line ${lines.linePos(pair.key.range?.[0] ?? 0).line}`
            )
        }
      })
      if (complexKeys.length > 0) return yamlProblems(complexKeys)
      // Converting can still fail: an alias whose anchor is missing, or one that expands too far.
      let value: unknown
      try {
        value = doc.toJS()
      } catch (e) {
        return yamlProblems([messageOf(e)])
      }
      return decode(value, name)
    })
}
