/**
 * The coordinator's bootstrap file (`coordinator.json` in its state directory),
 * written by `fleetmesh init` on the admin side and read by the coordinator. It
 * lives in protocol/ because both sides must agree on it.
 */
import { z } from 'zod'

export const COORDINATOR_CONFIG_FILE = 'coordinator.json'
export const IDENTITY_FILE = 'identity.key'
/**
 * Written by `fleetmesh init` beside the identity: the coordinator may create its
 * database on the first start only while this exists, and removes it once the
 * database holds the fleet. Without it, a state directory with an identity but no
 * usable database is damage to restore from a backup, not a new fleet.
 */
export const NEW_FLEET_FILE = 'new-fleet'

export const coordinatorConfigSchema = z.strictObject({
  fleetId: z.string().min(1).max(128),
  fleetRoot: z.string().length(43),
  /**
   * The addresses `init --coordinator-addr` gave agents (so their tokens carry
   * them); the coordinator listens there unless started with --listen. Absent in
   * files written before it existed: the coordinator then uses the host's default.
   */
  listen: z.array(z.string().startsWith('/').max(512)).max(16).optional(),
})
export type CoordinatorConfig = z.infer<typeof coordinatorConfigSchema>
