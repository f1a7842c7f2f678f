/**
 * What the socket and channel logs share: parameters with their secrets
 * filtered out, as Phoenix's `filter_parameters` does.
 */

const filtered = (value: unknown, filter: ReadonlyArray<string>): unknown => {
  if (Array.isArray(value)) return value.map((item) => filtered(item, filter))
  if (typeof value === "object" && value !== null && !(value instanceof Uint8Array)) {
    return filterParams(value as Readonly<Record<string, unknown>>, filter)
  }
  return value
}

/**
 * `params` with the value of every key that contains one of the `filter`
 * words (case-insensitively) replaced by `"[FILTERED]"`, in nested objects
 * and arrays too.
 *
 * @internal
 */
export const filterParams = (
  params: Readonly<Record<string, unknown>>,
  filter: ReadonlyArray<string>
): Record<string, unknown> => {
  const words = filter.map((word) => word.toLowerCase())
  const result: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(params)) {
    const lower = key.toLowerCase()
    result[key] = words.some((word) => lower.includes(word)) ? "[FILTERED]" : filtered(value, filter)
  }
  return result
}
