/**
 * An agent process for the crash tests: applies an update or recovers, reporting
 * into a real on-disk Outbox so the reports of a process that gets SIGKILLed survive.
 *
 *   node test/agent/updater-child.ts <config.json>
 *
 * Prints the outcome as one JSON line on stdout.
 */
import { appendFile, readFile } from 'node:fs/promises'
import { httpBlobFetcher } from '../../agent/blob-fetcher.ts'
import type { NixCacheSource } from '../../agent/nix-cache-client.ts'
import { nixosActivator } from '../../agent/nixos-activator.ts'
import { Outbox, reportKind } from '../../agent/outbox.ts'
import { profileActivator } from '../../agent/profile-activator.ts'
import { createUpdater } from '../../agent/updater.ts'
import { PublicKey } from '../../keys/identity.ts'
import { fileSize } from '../../lib/files.ts'
import { nixEnv } from '../../testkit/nix/index.ts'
import { coordinatorStandIn } from './nix-fixtures.ts'

export interface ChildConfig {
  action: 'offer' | 'recover'
  stateDir: string
  profileRoot: string
  fleetRoot: string
  fleetId: string
  machine: string
  tags: string[]
  envelopePath?: string
  /** Install with the nixos activator from a stand-in coordinator cache instead. */
  nixos?: NixosChild
}

export interface NixosChild {
  root: string
  profile: string
  /** The `nix copy` cache directory the stand-in serves. */
  cacheDir: string
  switchLog: string
  /** Gets a line "<sha256> <offset>" for every NAR download started. */
  fetchLog: string
  /** Stop the first NAR download after this many bytes and hang there (until killed). */
  stallAtByte?: number
}

/** The nixos activator over the stand-in, logging and optionally stalling NAR downloads. */
function nixos(child: NixosChild) {
  const standIn = coordinatorStandIn(child.cacheDir)
  let stall = child.stallAtByte
  const cache: NixCacheSource = {
    closure: (storePath, signal) => standIn.closure(storePath, signal),
    async fetchNar(sha256, size, dest, onProgress, signal) {
      await appendFile(child.fetchLog, `${sha256} ${(await fileSize(dest)) ?? 0}\n`)
      if (stall !== undefined && size > stall) {
        await standIn.fetchNar(sha256, stall, dest, onProgress, signal)
        stall = undefined
        await new Promise(() => {})
      }
      await standIn.fetchNar(sha256, size, dest, onProgress, signal)
    },
  }
  return nixosActivator({
    root: child.root,
    cache,
    profile: child.profile,
    env: nixEnv({ FLEETMESH_FAKE_SWITCH_LOG: child.switchLog }),
  })
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
  activator:
    config.nixos !== undefined
      ? nixos(config.nixos)
      : profileActivator({ root: config.profileRoot, fetcher: httpBlobFetcher(), fetchAttempts: 1 }),
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
