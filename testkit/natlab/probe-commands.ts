/**
 * Driving the hole-punch probe (probe/holepunch-node.ts) by command: used by the
 * hole-punching lab tests and by `npm run bench:nat`.
 */
import type { LabProcess, ProbeEvent } from './lab.ts'

let refs = 0

/** Sends a command and waits for its answer, throwing if the probe reports it failed. */
export async function command<E extends ProbeEvent = ProbeEvent>(
  peer: { proc: LabProcess; name?: string },
  cmd: Record<string, unknown>,
  answer: string,
  timeoutMs = 15_000,
): Promise<E> {
  const ref = `r${refs++}`
  peer.proc.send({ ...cmd, ref })
  const event = await peer.proc.waitFor(
    (e) => e.ref === ref && (e.event === answer || e.event === 'failed'),
    timeoutMs,
  )
  if (event.event === 'failed') {
    throw new Error(
      `${peer.name ?? peer.proc.label} ${String(cmd.cmd)} failed: ${JSON.stringify(event.error)}`,
    )
  }
  return event as E
}

/** Matches a hole-punch attempt record about `peer`. */
export const attemptWith =
  (peer: string) =>
  (e: ProbeEvent): boolean =>
    e.event === 'attempt' && e.peer === peer
