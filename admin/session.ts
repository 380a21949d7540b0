/**
 * What every command that talks to the coordinator shares: the options to
 * override its address and ask for JSON, and a client connected for the length
 * of the command.
 */
import { list, type Options, type Parsed } from '../lib/index.ts'
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

/** Connects with the admin key in `home` (or `--coordinator` addresses), runs `fn`, disconnects. */
export async function withClient<T>(home: string, p: Parsed, fn: (c: AdminClient) => Promise<T>): Promise<T> {
  const client = await AdminClient.connect(await loadAdminHome(home), list(p, 'coordinator'))
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}
