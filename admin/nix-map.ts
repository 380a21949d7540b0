/**
 * The `deploy --nix-map` file: a JSON object mapping machine names to the
 * store path of each machine's system closure, as a fleet's build produces it:
 *
 *   { "edge-1": "/nix/store/…-nixos-system-edge-1-24.05", "edge-2": "/nix/store/…" }
 *
 * Every error names the entry that is wrong.
 */
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import { machineName } from '../keys/index.ts'
import { UsageError } from '../lib/index.ts'
import { storePath } from '../protocol/index.ts'

const MAX_MACHINES = 10_000

const nixMapSchema = z.record(z.string(), z.unknown())

/** Machine name → store path, sorted by machine name; throws a UsageError naming `file` and the bad entry. */
export function parseNixMap(text: string, file: string): Map<string, string> {
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new UsageError(`--nix-map ${file} is not JSON: ${(err as Error).message}`)
  }
  const parsed = nixMapSchema.safeParse(value)
  if (!parsed.success)
    throw new UsageError(
      `--nix-map ${file} must be a JSON object mapping machine names to store paths, like {"edge-1": "/nix/store/…-nixos-system-edge-1"}`,
    )
  const entries = Object.entries(parsed.data).sort(([a], [b]) => a.localeCompare(b))
  if (entries.length === 0) throw new UsageError(`--nix-map ${file} names no machines`)
  if (entries.length > MAX_MACHINES)
    throw new UsageError(`--nix-map ${file} names ${entries.length} machines; at most ${MAX_MACHINES}`)
  const problems: string[] = []
  for (const [name, path] of entries) {
    if (!machineName.safeParse(name).success)
      problems.push(`"${name}" is not a machine name (lowercase letters, digits and inner hyphens)`)
    else if (!storePath.safeParse(path).success)
      problems.push(
        `"${name}": ${typeof path === 'string' ? `"${path.slice(0, 120)}"` : JSON.stringify(path).slice(0, 120)} is not a /nix/store/<32-character hash>-<name> path`,
      )
  }
  if (problems.length > 0)
    throw new UsageError(
      `--nix-map ${file}: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? `; and ${problems.length - 5} more` : ''}`,
    )
  return new Map(entries as [string, string][])
}

export async function readNixMap(file: string): Promise<Map<string, string>> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new UsageError(`cannot read --nix-map ${file}: ${(err as Error).message}`)
  }
  return parseNixMap(text, file)
}
