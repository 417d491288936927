/**
 * Generates the ServiceComposition CustomResourceDefinition from the Schema in `ServiceComposition.ts`,
 * so the API server, `kubectl explain` and the CLI agree on one definition.
 *
 * The OpenAPI v3 schema is structural (a `type` on every node, no `$ref`, no unions of types), as
 * `apiextensions.k8s.io/v1` requires. Rules OpenAPI cannot express travel as CEL
 * (`x-kubernetes-validations`), lists keyed by name become `x-kubernetes-list-type: map` so server-side
 * apply merges them per item and the API server rejects duplicate keys.
 */
import { Option, SchemaAST } from "effect"
import { stringify } from "yaml"
import * as SC from "./ServiceComposition.js"

export interface JSONSchemaProps {
  type?: "object" | "array" | "string" | "integer" | "number" | "boolean"
  description?: string
  properties?: Record<string, JSONSchemaProps>
  required?: Array<string>
  items?: JSONSchemaProps
  additionalProperties?: JSONSchemaProps
  enum?: Array<string | number | boolean>
  pattern?: string
  minimum?: number
  maximum?: number
  minLength?: number
  maxLength?: number
  minItems?: number
  maxItems?: number
  default?: unknown
  "x-kubernetes-preserve-unknown-fields"?: boolean
  "x-kubernetes-list-type"?: "map" | "set" | "atomic"
  "x-kubernetes-list-map-keys"?: Array<string>
  "x-kubernetes-validations"?: Array<SC.CelRule>
}

/** Lists whose items are identified by a key: merged per item by server-side apply. */
const listMapKeys: Record<string, string> = {
  "spec.components": "name",
  "spec.components[].env": "name",
  "status.conditions": "type",
  "status.components": "name"
}

// Keywords Effect's built-in filters record in their JSON Schema annotation that OpenAPI v3 shares.
const carriedKeywords = [
  "type",
  "pattern",
  "minimum",
  "maximum",
  "minLength",
  "maxLength",
  "minItems",
  "maxItems"
] as const

const annotationsOf = (ast: SchemaAST.Annotated): JSONSchemaProps => {
  const out: JSONSchemaProps = {}
  const json = SchemaAST.getJSONSchemaAnnotation(ast).pipe(Option.getOrUndefined) as
    | Record<string, unknown>
    | undefined
  for (const keyword of carriedKeywords) {
    if (json?.[keyword] !== undefined) Object.assign(out, { [keyword]: json[keyword] })
  }
  const description = SchemaAST.getDescriptionAnnotation(ast)
  if (Option.isSome(description)) out.description = description.value
  const rules = ast.annotations[SC.CelRules] as ReadonlyArray<SC.CelRule> | undefined
  if (rules !== undefined) out["x-kubernetes-validations"] = [...rules]
  return out
}

// Outer annotations win: a description given where a schema is used beats the one it was defined with.
const mergeInner = (outer: JSONSchemaProps, inner: JSONSchemaProps): JSONSchemaProps => {
  const rules = [...(inner["x-kubernetes-validations"] ?? []), ...(outer["x-kubernetes-validations"] ?? [])]
  const merged = { ...inner, ...outer }
  if (rules.length > 0) merged["x-kubernetes-validations"] = rules
  // `int()` says integer; the base NumberKeyword said number.
  if (inner.type === "integer" || outer.type === "integer") merged.type = "integer"
  return merged
}

const withoutUndefined = (types: ReadonlyArray<SchemaAST.AST>) =>
  types.filter((t) => !SchemaAST.isUndefinedKeyword(t))

const toProps = (ast: SchemaAST.AST, path: string): JSONSchemaProps => {
  switch (ast._tag) {
    case "Refinement":
      return mergeInner(annotationsOf(ast), toProps(ast.from, path))
    case "Transformation":
      // The CRD validates what users write: the encoded side.
      return mergeInner(annotationsOf(ast), toProps(ast.from, path))
    case "StringKeyword":
      return { type: "string", ...annotationsOf(ast) }
    case "NumberKeyword":
      return { type: "number", ...annotationsOf(ast) }
    case "BooleanKeyword":
      return { type: "boolean", ...annotationsOf(ast) }
    case "UnknownKeyword":
      return { "x-kubernetes-preserve-unknown-fields": true, ...annotationsOf(ast) }
    case "Literal":
      return literalsToProps([ast], annotationsOf(ast))
    case "Union": {
      const members = withoutUndefined(ast.types)
      if (members.every(SchemaAST.isLiteral)) return literalsToProps(members, annotationsOf(ast))
      if (members.length === 1 && members[0] !== undefined) {
        return mergeInner(annotationsOf(ast), toProps(members[0], path))
      }
      throw new Error(`${path}: a union of ${members.map((m) => m._tag).join(", ")} is not structural`)
    }
    case "TupleType": {
      const item = ast.rest[0]
      if (ast.elements.length > 0 || item === undefined) throw new Error(`${path}: tuples are not supported`)
      const props: JSONSchemaProps = {
        type: "array",
        items: toProps(item.type, `${path}[]`),
        ...annotationsOf(ast)
      }
      const key = listMapKeys[path]
      if (key !== undefined) {
        props["x-kubernetes-list-type"] = "map"
        props["x-kubernetes-list-map-keys"] = [key]
      }
      return props
    }
    case "TypeLiteral": {
      const properties: Record<string, JSONSchemaProps> = {}
      const required: Array<string> = []
      for (const ps of ast.propertySignatures) {
        const name = String(ps.name)
        const propPath = path === "" ? name : `${path}.${name}`
        properties[name] = mergeInner(annotationsOf(ps), toProps(ps.type, propPath))
        if (!ps.isOptional) required.push(name)
      }
      const props: JSONSchemaProps = { type: "object", ...annotationsOf(ast) }
      if (ast.propertySignatures.length > 0) props.properties = properties
      if (required.length > 0) props.required = required
      const index = ast.indexSignatures[0]
      if (index !== undefined && ast.propertySignatures.length === 0) {
        props.additionalProperties = toProps(index.type, `${path}{}`)
      }
      return props
    }
    default:
      throw new Error(`${path}: ${ast._tag} has no OpenAPI form`)
  }
}

const literalsToProps = (
  literals: ReadonlyArray<SchemaAST.AST>,
  annotations: JSONSchemaProps
): JSONSchemaProps => {
  const values = literals.map((l) => (l as SchemaAST.Literal).literal)
  const kinds = new Set(values.map((v) => typeof v))
  const only = [...kinds][0]
  if (kinds.size !== 1 || (only !== "string" && only !== "number" && only !== "boolean")) {
    throw new Error(`literals of mixed or unsupported types: ${values.join(", ")}`)
  }
  const props: JSONSchemaProps = {
    type: only,
    enum: values as Array<string | number | boolean>,
    ...annotations
  }
  // CEL's cost estimate assumes an unbounded string unless told, and refuses rules over one.
  if (only === "string") props.maxLength = Math.max(...values.map((v) => String(v).length))
  return props
}

/**
 * The OpenAPI v3 schema of the resource. Kubernetes owns `metadata`: the API server refuses anything
 * but its type there (not even a description).
 */
export const openApiSchema = (): JSONSchemaProps => {
  const root = toProps(SC.ServiceComposition.ast, "")
  return { ...root, properties: { ...root.properties, metadata: { type: "object" } } }
}

export const crdName = `${SC.plural}.${SC.group}`

/** The `apiextensions.k8s.io/v1` CustomResourceDefinition for ServiceComposition. */
export const customResourceDefinition = () => ({
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: {
    name: crdName,
    labels: { "app.kubernetes.io/name": "iii", "app.kubernetes.io/component": "crd" }
  },
  spec: {
    group: SC.group,
    scope: "Namespaced",
    names: {
      kind: SC.kind,
      listKind: `${SC.kind}List`,
      plural: SC.plural,
      singular: SC.kind.toLowerCase(),
      // `sc` is StorageClass's; `svccomp` collides with nothing built in.
      shortNames: ["svccomp"],
      categories: ["iii"]
    },
    versions: [
      {
        name: SC.version,
        served: true,
        storage: true,
        subresources: { status: {} },
        additionalPrinterColumns: [
          {
            name: "Components",
            type: "integer",
            jsonPath: ".status.componentCount",
            description: "Number of components"
          },
          {
            name: "Ready",
            type: "string",
            jsonPath: ".status.ready",
            description: "Ready components over all"
          },
          {
            name: "Status",
            type: "string",
            jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
            description: "Reason of the Ready condition"
          },
          { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" }
        ],
        schema: { openAPIV3Schema: openApiSchema() }
      }
    ]
  }
})

const header = `# Generated from packages/core/src/ServiceComposition.ts by \`npm run crd:generate\`. Do not edit.\n`

/** The CRD as the YAML committed at manifests/crd/servicecomposition.yaml. */
export const toYaml = (): string => header + stringify(customResourceDefinition(), { lineWidth: 0 })
