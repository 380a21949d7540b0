/**
 * What the updater tests share: an agent's directory layout in a temp dir, signed
 * releases served by the test blob server, and readers for what the tests check
 * (update.json, the log the activate hooks append to).
 */
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { HealthCheck, Manifest } from '../../protocol/messages.ts'
import { type Archive, type FileSpec, makeTar } from '../../testkit/archives.ts'
import { type BlobServer, type Fleet, servedPayload } from './fixtures.ts'

export interface AgentLayout {
  /** The updater's state directory (update.json, outbox/). */
  stateDir: string
  /** The profile activator's root. */
  root: string
  /** Where test hooks log what ran. */
  hookLog: string
}

export function agentLayout(dir: string): AgentLayout {
  return { stateDir: join(dir, 'state'), root: join(dir, 'profile'), hookLog: join(dir, 'hooks.log') }
}

export interface Release {
  manifest: Manifest
  archive: Archive
  envelope: Uint8Array
}

export interface ReleaseSpec {
  name: string
  sequence: number
  files: Record<string, FileSpec>
  healthCheck: HealthCheck
  manifest?: Partial<Manifest> | undefined
}

/** Builds an archive of `files` in `dir`, serves it, and signs a manifest for it. */
export async function signedRelease(
  fleet: Fleet,
  server: BlobServer,
  dir: string,
  spec: ReleaseSpec,
): Promise<Release> {
  const archive = await makeTar(dir, spec.files)
  const manifest = fleet.manifest({
    sequence: spec.sequence,
    generation: spec.name,
    payload: servedPayload(server, archive),
    healthCheck: spec.healthCheck,
    ...spec.manifest,
  })
  return { manifest, archive, envelope: fleet.sign(manifest) }
}

export async function readUpdateJson(stateDir: string) {
  return JSON.parse(await readFile(join(stateDir, 'update.json'), 'utf8'))
}

/** The lines hooks logged so far; none when nothing ran yet. */
export async function readHookLines(hookLog: string): Promise<string[]> {
  return (await readFile(hookLog, 'utf8').catch(() => '')).split('\n').filter(Boolean)
}
