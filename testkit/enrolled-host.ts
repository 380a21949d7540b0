/**
 * An in-process agent identity, enrolled with the fleet's coordinator with a
 * real token: a libp2p host the coordinator will serve (control, blobs, the
 * Nix cache) without starting an agent process. Benchmarks use it where a
 * process per agent would measure Node start-up instead of fleetmesh.
 */
import { join } from 'node:path'
import { loadAdminHome } from '../admin/home.ts'
import { enrollWithCoordinator } from '../agent/enroll.ts'
import { issueToken, PrivateKey, parseToken } from '../keys/index.ts'
import { createHost, type FleetHost } from '../net/index.ts'
import type { FleetDirectory } from './fleetmesh.ts'

export interface EnrolledHost {
  name: string
  key: PrivateKey
  host: FleetHost
  /** The coordinator's peer id, as the token named it */
  coordinator: string
}

/**
 * Enrolls `name` (with `tags`) as the fleet's admin would: a token from the
 * admin home, presented by a new host; the enrollment file goes to `dir`.
 */
export async function enrolledHost(
  fleet: FleetDirectory,
  name: string,
  tags: readonly string[],
  dir: string,
): Promise<EnrolledHost> {
  const home = await loadAdminHome(fleet.home)
  const key = PrivateKey.generate()
  const host = await createHost({ role: 'agent', privateKey: key.toLibp2p(), listen: [] })
  const token = parseToken(
    issueToken(home.key, home.chain, {
      fleetRoot: home.fleetRoot,
      coordinator: home.fleet.coordinator,
      machine: name,
      tags: [...tags],
      ttlMs: 3_600_000,
    }),
  )
  await enrollWithCoordinator(host, token, join(dir, `${name}.json`))
  return { name, key, host, coordinator: home.fleet.coordinator.peerId }
}
