/**
 * `fleetmesh ui`: the operator's live dashboard, served on loopback by this
 * process (ui/server.ts) and acting over the mesh with the admin's own key
 * and certificate, so it shows and allows exactly what `fleetmesh` commands
 * would. Runs until Ctrl-C (SIGINT) or SIGTERM.
 */
import { randomBytes } from 'node:crypto'
import { type CommandSpec, flag, parseCommand, str } from '../../lib/index.ts'
import { REMOTE_OPTIONS, withClient } from '../session.ts'
import { UiApi } from '../ui/api.ts'
import { UiEvents } from '../ui/events.ts'
import { parseListen, startUiServer } from '../ui/server.ts'

export const UI_COMMAND: CommandSpec = {
  name: 'ui',
  summary: 'Serve the live web dashboard of your fleet on loopback, acting with your admin key.',
  usage: 'fleetmesh ui [--listen 127.0.0.1:0] [--coordinator <multiaddr>]... [--json]',
  options: {
    ...REMOTE_OPTIONS,
    json: { type: 'boolean', description: 'print the URL as one JSON line ({"event":"listening","url":…})' },
    listen: {
      type: 'string',
      value: '<host>:<port>',
      description:
        'loopback address to serve on (127.0.0.1, localhost or [::1]); port 0 picks a free one; other addresses are refused',
      default: '127.0.0.1:0',
    },
  },
  notes: [
    'Open the printed URL: it carries a random token, which the first load trades for a cookie; every',
    'request without it, with a foreign Host header or (for actions) from another origin is refused.',
    'The page shows the machines, rollouts and audit log your certificate covers, live; deploy and',
    'rollout pause/resume/abort appear only when it grants deploy. Your private key never leaves this process.',
  ],
  examples: ['fleetmesh ui', 'fleetmesh ui --listen 127.0.0.1:8080'],
}

export async function ui(argv: string[], home: string): Promise<number> {
  const p = parseCommand(argv, UI_COMMAND)
  const listen = parseListen(str(p, 'listen') ?? '127.0.0.1:0')
  const json = flag(p, 'json')
  return withClient(home, p, async (client) => {
    const events = new UiEvents(client)
    const api = new UiApi(client, events)
    let server: Awaited<ReturnType<typeof startUiServer>>
    try {
      server = await startUiServer(listen, randomBytes(24).toString('base64url'), api, events)
    } catch (err) {
      await events.stop()
      throw err
    }
    const { admin, canDeploy } = api.session
    if (json)
      process.stdout.write(`${JSON.stringify({ event: 'listening', url: server.url, admin, canDeploy })}\n`)
    else
      process.stdout.write(
        `fleetmesh dashboard for fleet ${api.session.fleetId}, as ${admin}${canDeploy ? '' : ' (read-only)'}:\n` +
          `  ${server.url}\nopen it in a browser on this machine; Ctrl-C stops it\n`,
      )
    await new Promise<void>((resolve) => {
      process.once('SIGINT', resolve)
      process.once('SIGTERM', resolve)
    })
    await server.close()
    return 0
  })
}
