// Fuzz target: ServiceComposition validation, as `iii validate` runs it on YAML text and the
// controller on the JSON objects the API server sends (input starting with `{`). It never throws; a
// refused document names at least one problem with a path; an accepted one encodes and validates
// again to the same value.
import { isDeepStrictEqual } from "node:util"
import { Either } from "effect"
import { ServiceComposition } from "../packages/core/dist/index.js"

const checked = (result) => {
  if (Either.isLeft(result)) {
    const issues = result.left.issues ?? result.left
    if (
      issues.length === 0 ||
      issues.some((i) => typeof i.path !== "string" || typeof i.message !== "string")
    )
      throw new Error("a refused document without a problem named")
    return
  }
  const again = ServiceComposition.validate(ServiceComposition.encode(result.right))
  if (Either.isLeft(again))
    throw new Error(`an accepted document does not validate again: ${JSON.stringify(again.left)}`)
  if (!isDeepStrictEqual(again.right, result.right))
    throw new Error("an accepted document changes through encode")
}

export function fuzz(data) {
  const text = data.toString("utf8")
  if (text.startsWith("{")) {
    let value
    try {
      value = JSON.parse(text)
    } catch {
      return
    }
    return checked(ServiceComposition.validate(value))
  }
  for (const result of ServiceComposition.fromYaml(text, "fuzz")) checked(result)
}
