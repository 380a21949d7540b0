/**
 * Which enrolled machines an admin's certificate covers, and the one answer for
 * a machine it does not: the same as for a machine that does not exist, so an
 * admin scoped to one tag cannot learn which other machines are enrolled.
 */
import { type Authority, authorityCovers } from '../keys/index.ts'
import { suggestion } from '../lib/index.ts'
import { AdminDenied } from './admin-context.ts'
import type { FleetStore, MachineRecord } from './store.ts'

export function coversMachine(authority: Authority, m: Pick<MachineRecord, 'name' | 'tags'>): boolean {
  return authorityCovers(authority, { kind: 'machine', name: m.name, tags: m.tags })
}

/** The enrolled machines the caller's certificate covers. */
export async function coveredMachines(store: FleetStore, authority: Authority): Promise<MachineRecord[]> {
  return (await store.listMachines()).filter((m) => coversMachine(authority, m))
}

/** Whether the caller's certificate covers a machine, by name, from one read (machines not enrolled are not). */
export async function coverage(store: FleetStore, authority: Authority): Promise<(name: string) => boolean> {
  const covered = new Set((await coveredMachines(store, authority)).map((m) => m.name))
  return (name) => covered.has(name)
}

/** The machine, if it is enrolled and the caller's certificate covers it. */
async function coveredMachine(
  store: FleetStore,
  authority: Authority,
  name: string,
): Promise<MachineRecord | undefined> {
  const m = await store.getMachine(name)
  return m !== undefined && coversMachine(authority, m) ? m : undefined
}

/**
 * The machine, or the refusal 'unknown-machine' whether it is missing or out of
 * the caller's scope; the suggestion comes only from machines the caller may see.
 */
export async function requireCoveredMachine(
  store: FleetStore,
  authority: Authority,
  name: string,
): Promise<MachineRecord> {
  const m = await coveredMachine(store, authority, name)
  if (m !== undefined) return m
  const visible = (await coveredMachines(store, authority)).map((v) => v.name)
  throw new AdminDenied(
    'unknown-machine',
    `no machine named "${name}" that your certificate covers is enrolled${suggestion(name, visible)} ("fleetmesh machines" lists them)`,
  )
}
