/**
 * Counts the Ed25519 verifies actually made, for tests of what is verified
 * once and remembered. Switches the process's implementation to a counting
 * node:crypto one until `restore()`.
 *
 * @example
 *
 * ```ts
 * const verifies = countVerifies()
 * try { verifyChain(chain, policy) } finally { verifies.restore() }
 * expect(verifies.count).toBe(1)
 * ```
 */
import { nodeEd25519, useEd25519 } from '../keys/index.ts'

export function countVerifies(): { count: number; restore(): void } {
  const seen = { count: 0, restore: () => useEd25519(nodeEd25519) }
  useEd25519({
    ...nodeEd25519,
    name: 'counting',
    verifyRaw: (k, m, s) => {
      seen.count++
      return nodeEd25519.verifyRaw(k, m, s)
    },
  })
  return seen
}
