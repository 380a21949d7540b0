/**
 * Stopping a host without the process dying half-way through.
 *
 * libp2p's connection manager stops by closing each connection and waiting for
 * its 'close' event, bounded by `AbortSignal.timeout(500)`; after that it aborts
 * the connection. Node does not let such a timer keep the process alive. When
 * the socket under a connection is already gone and no 'close' event comes,
 * nothing holds the event loop: the process exits with the stop unsettled (the
 * CLI's "unsettled top-level await", exit code 13) instead of finishing the
 * command. Seen about once in 150 admin commands on a loaded 2-core machine.
 */
import type { FleetHost } from './host.ts'

/**
 * How long the process is held while a host stops: far past libp2p's own
 * 500 ms close bound, so the stop always finishes when it can; if libp2p itself
 * hangs past it, the process is free to end as it would have.
 */
export const HOST_STOP_HOLD_MS = 10_000

/** `host.stop()`, with the event loop held until it settles (see above). */
export async function stopHost(host: Pick<FleetHost, 'stop'>, holdMs = HOST_STOP_HOLD_MS): Promise<void> {
  const hold = setTimeout(() => {}, holdMs)
  try {
    await host.stop()
  } finally {
    clearTimeout(hold)
  }
}
