/**
 * The code of the typed error a call throws, for tests that assert which rule
 * refused something: undefined when it returns, and any other throw passes
 * through (a bug, not a refusal).
 *
 * @example
 *
 * ```ts
 * expect(thrownCode(() => verifyChain(chain, policy), CertificateError)).toBe('expired')
 * ```
 */
export function thrownCode<E extends Error & { code: string }>(
  fn: () => unknown,
  type: abstract new (...args: never[]) => E,
): E['code'] | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof type) return err.code
    throw err
  }
  return undefined
}
