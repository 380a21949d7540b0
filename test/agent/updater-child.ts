/**
 * An agent process for the crash tests: applies an update or recovers, reporting
 * into a real on-disk Outbox so the reports of a process that gets SIGKILLed survive.
 *
 *   node test/agent/updater-child.ts <config.json>
 *
 * Prints the outcome as one JSON line on stdout.
 */
import { readFile } from 'node:fs/promises'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import { Outbox, reportKind } from '../../agent/outbox.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater } from '../../agent/updater.ts'
import { PublicKey } from '../../keys/identity.ts'

export interface ChildConfig {
  action: 'offer' | 'recover'
  stateDir: string
  profileRoot: string
  fleetRoot: string
  fleetId: string
  machine: string
  tags: string[]
  envelopePath?: string
}

const configPath = process.argv[2]
if (configPath === undefined) throw new Error('usage: updater-child.ts <config.json>')
const config = JSON.parse(await readFile(configPath, 'utf8')) as ChildConfig

const outbox = await Outbox.open(config.stateDir)
const updater = await createUpdater({
  stateDir: config.stateDir,
  trust: {
    fleetRoot: PublicKey.parse(config.fleetRoot),
    fleetId: config.fleetId,
    machine: config.machine,
    tags: config.tags,
  },
  activator: profileActivator({ root: config.profileRoot, fetcher: httpBlobFetcher(), fetchAttempts: 1 }),
  confirm: async () => {},
  report: async (status) => {
    await outbox.enqueue(
      await outbox.nextSeq(),
      new TextEncoder().encode(JSON.stringify(status)),
      reportKind(status),
    )
  },
  progressIntervalMs: 0,
})

const outcome =
  config.action === 'recover'
    ? await updater.recover()
    : await updater.offer(new Uint8Array(await readFile(config.envelopePath as string)))
await updater.close()
process.stdout.write(`${JSON.stringify({ outcome, current: updater.current() })}\n`)
