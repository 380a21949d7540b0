/**
 * How the nixos activator (nixos-activator.ts, nixos-fetch.ts) turns failures
 * of Nix calls into {@link ActivatorError}s: a missing Nix is `nix-unavailable`
 * whatever the step, anything else gets the step's code.
 */
import { errorMessage } from '../lib/index.ts'
import { ActivatorError, type ActivatorErrorCode } from './activator.ts'
import { NixStoreError } from './nix-store.ts'

/** Nix output quoted in an error message (which holds 2 KiB). */
export const MAX_QUOTED_OUTPUT = 1200

/** Runs a Nix call, turning its failure into an ActivatorError with `code` (or nix-unavailable). */
export async function nixStep<T>(code: ActivatorErrorCode, call: () => Promise<T>): Promise<T> {
  try {
    return await call()
  } catch (err) {
    throw activatorError(err, code)
  }
}

/** `err` as an ActivatorError with `code`, its message prefixed with what was being done. */
export function activatorError(err: unknown, code: ActivatorErrorCode, doing?: string): ActivatorError {
  if (err instanceof ActivatorError) return err
  const prefix = doing === undefined ? '' : `${doing}: `
  if (err instanceof NixStoreError && err.code === 'not-installed')
    return new ActivatorError('nix-unavailable', err.message, { cause: err })
  return new ActivatorError(code, `${prefix}${errorMessage(err)}`, { cause: err })
}

/** The last `max` characters of `text`, marked with "…" when cut. */
export function tail(text: string, max: number): string {
  return text.length <= max ? text : `…${text.slice(text.length - max + 1)}`
}
