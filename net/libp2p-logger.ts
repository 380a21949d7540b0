/**
 * The logger libp2p gets on every host (net/host.ts).
 *
 * @libp2p/logger makes two or three `weald` debug instances for each component
 * it is asked for, each matching the DEBUG patterns and asking whether stderr
 * is a terminal, and libp2p asks for several per connection and per stream:
 * 2.5% of a coordinator's main thread in a reconnect storm of 1,000 agents.
 * With DEBUG unset, the daemons' normal state, every one of them is disabled
 * anyway, so one shared disabled logger serves them all; with DEBUG set, libp2p's
 * own logger is used, as before.
 */
import type { ComponentLogger, Logger } from '@libp2p/interface'
import { defaultLogger } from '@libp2p/logger'

const ignore = (): void => {}

const DISABLED: Logger = Object.assign((_formatter: unknown, ..._args: unknown[]) => {}, {
  enabled: false,
  error: ignore,
  trace: ignore,
  newScope: (): Logger => DISABLED,
})

const SILENT: ComponentLogger = { forComponent: () => DISABLED }

/** The logger for a host made now: silent unless DEBUG names something to log. */
export function libp2pLogger(env: NodeJS.ProcessEnv = process.env): ComponentLogger {
  return env.DEBUG ? defaultLogger() : SILENT
}
