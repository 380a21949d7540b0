/**
 * The hole-punching options agents and coordinators share on their command
 * lines (config file and environment alike, through lib/cli's parsing).
 */
import { duration, optionLabel, type Parsed, UsageError } from '../lib/index.ts'

/** Below the observers' idle timeout (120 s), which would otherwise close the kept connection first. */
const MAX_NAT_KEEPALIVE_MS = 110_000

export const NAT_KEEPALIVE_MAX_DESCRIPTION =
  "longest interval between keepalives of the punch port's NAT mapping (to the first observer); " +
  'halved, down to 5s, whenever the NAT turns out to forget the mapping sooner; 1s to 110s'

/** `--keepalive-max` in ms. */
export function natKeepaliveMax(p: Parsed): number {
  const ms = duration(p, 'keepalive-max', 30_000)
  if (ms < 1_000 || ms > MAX_NAT_KEEPALIVE_MS)
    throw new UsageError(`${optionLabel(p, 'keepalive-max')} must be between 1s and 110s, got ${ms} ms`)
  return ms
}
