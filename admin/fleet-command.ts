/**
 * What the fleet-file commands (plan, apply, explain, inventory) share: the
 * option naming the file, and reading it through to its per-machine resolution.
 */
import type { Options, Parsed } from '../lib/index.ts'
import { str } from '../lib/index.ts'
import { type FleetFile, loadFleetFile } from './fleet-file.ts'
import { type ResolvedMachine, resolveFleet } from './fleet-resolve.ts'

export const DEFAULT_FLEET_FILE = 'fleet.json'

/** For the commands whose positional is something else (explain's machine). */
export const FILE_OPTION = {
  file: {
    type: 'string',
    value: '<fleet.json>',
    description: 'the fleet file (docs/fleet-file.md)',
    default: DEFAULT_FLEET_FILE,
  },
} as const satisfies Options

export interface LoadedFleet {
  file: FleetFile
  machines: ResolvedMachine[]
}

/** Reads and resolves the fleet file at `path`: every error names the file, line and field. */
export async function loadFleet(path: string): Promise<LoadedFleet> {
  const file = await loadFleetFile(path)
  return { file, machines: resolveFleet(file) }
}

/** The file named by --file, else fleet.json. */
export const fileOption = (p: Parsed): string => str(p, 'file') ?? DEFAULT_FLEET_FILE
