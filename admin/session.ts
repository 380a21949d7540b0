/**
 * What every command that talks to the coordinator shares: the options to
 * override its address and ask for JSON, and a client connected for the length
 * of the command.
 */
import { machineName } from '../keys/index.ts'
import { list, type Options, type Parsed, UsageError } from '../lib/index.ts'
import { checkAddresses } from '../net/index.ts'
import { AdminClient } from './client.ts'
import { loadAdminHome } from './home.ts'

/** Documented for help; withClient reads `coordinator`. */
export const REMOTE_OPTIONS = {
  coordinator: {
    type: 'string',
    multiple: true,
    value: '<multiaddr>',
    description: 'coordinator address to dial instead of the ones saved in --home',
  },
  json: { type: 'boolean', description: 'print machine-readable JSON' },
} as const satisfies Options

/** --json alone, for commands that never reach the coordinator. */
export const JSON_OPTION = { json: REMOTE_OPTIONS.json } as const satisfies Options

/**
 * Connects with the admin key in `home` (or `--coordinator` addresses), runs `fn`, disconnects.
 * Every address is checked before the host starts, and the host is stopped whatever happens:
 * a host left running keeps the process alive after the error is printed.
 */
export async function withClient<T>(home: string, p: Parsed, fn: (c: AdminClient) => Promise<T>): Promise<T> {
  const override = checkAddresses(list(p, 'coordinator'), '--coordinator')
  const client = await AdminClient.connect(await loadAdminHome(home), override)
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

/**
 * The one machine a command is about (ping, doctor, log): at most one positional,
 * a valid machine name. Undefined when none was given; the command decides
 * whether that is an error.
 */
export function machineArgument(p: Parsed, command: string, usage: string): string | undefined {
  const [machine, ...extra] = p.positionals
  if (extra.length > 0)
    throw new UsageError(`${command} takes one machine, got ${p.positionals.join(' ')}\nusage: ${usage}`)
  if (machine !== undefined && !machineName.safeParse(machine).success)
    throw new UsageError(`"${machine}" is not a valid machine name\nusage: ${usage}`)
  return machine
}
