/**
 * Splits `items` into runs of at most `limit.items` entries and `limit.bytes`
 * of length each, in order; an item longer than `limit.bytes` goes alone. For
 * requests and frames that must stay under a size limit (strings by length,
 * byte arrays by byte length).
 */
export function batches<T extends { readonly length: number }>(
  items: readonly T[],
  limit: { items: number; bytes: number },
): T[][] {
  const out: T[][] = []
  let current: T[] = []
  let size = 0
  for (const item of items) {
    if (current.length > 0 && (current.length >= limit.items || size + item.length > limit.bytes)) {
      out.push(current)
      current = []
      size = 0
    }
    current.push(item)
    size += item.length
  }
  if (current.length > 0) out.push(current)
  return out
}
