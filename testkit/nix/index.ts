/**
 * Real Nix for tests, the NixOS demo and the closure benchmark: builds fake
 * system closures with Debian's Nix (plain derivations, no nixpkgs, which
 * cannot be fetched here), deletes them from the store so an agent has to
 * fetch them, and says why Nix tests must skip where Nix is missing.
 *
 * Building as root with Debian's Nix 2.8 needs `sandbox = false` and an empty
 * `build-users-group` (there is no nixbld group), and an empty `substituters`
 * (or every build waits ~4.5 s for cache.nixos.org, which is unreachable).
 */
import { execFile, execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const EXPR = join(import.meta.dirname, 'fake-system.nix')

/** Settings every Nix call in tests runs with (merged into NIX_CONFIG). */
export const NIX_TEST_CONFIG = [
  'sandbox = false',
  'build-users-group =',
  'substituters =',
  'experimental-features = nix-command',
].join('\n')

/** The environment for Nix calls in tests: the test settings on top of any NIX_CONFIG already set. */
export function nixEnv(extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const base = process.env.NIX_CONFIG
  return { ...process.env, NIX_CONFIG: base ? `${base}\n${NIX_TEST_CONFIG}` : NIX_TEST_CONFIG, ...extra }
}

/**
 * Why Nix tests cannot run here, or undefined when they can. They need
 * Debian's nix-bin and root (the single-user store at /nix is root's).
 */
export function nixUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'they need root (the single-user Nix store under /nix belongs to root)'
  try {
    execFileSync('nix-store', ['--version'], { stdio: 'ignore', env: nixEnv() })
  } catch {
    return 'nix-store is not installed (apt-get install nix-bin)'
  }
  return undefined
}

export interface FakeSystemSpec {
  /** Unique per closure */
  tag: string
  /** switch-to-configuration exits 1 */
  fail?: boolean
  /** Dependency paths besides the top one (default 1) */
  deps?: number
  /** Size of each dependency in KiB (default 1) */
  kb?: number
  /** A dependency shared by every closure built with the same value */
  shared?: string
}

/** Builds a fake system closure and returns its top store path. */
export async function buildFakeSystem(spec: FakeSystemSpec): Promise<string> {
  const args = [EXPR, '--no-out-link', '--argstr', 'tag', spec.tag, '--argstr', 'fail', spec.fail ? '1' : '0']
  args.push('--arg', 'deps', String(spec.deps ?? 1), '--arg', 'kb', String(spec.kb ?? 1))
  if (spec.shared !== undefined) args.push('--argstr', 'shared', spec.shared)
  const { stdout } = await run('nix-build', args, { env: nixEnv(), maxBuffer: 1 << 20 })
  const path = stdout.trim().split('\n').pop()
  if (path === undefined || !path.startsWith('/nix/store/'))
    throw new Error(`nix-build printed no store path: ${stdout}`)
  return path
}

/** Every path in the closure of `path`, the path itself included. */
export async function closureOf(path: string): Promise<string[]> {
  const { stdout } = await run('nix-store', ['--query', '--requisites', path], {
    env: nixEnv(),
    maxBuffer: 16 << 20,
  })
  return stdout.trim().split('\n').filter(Boolean)
}

export async function isValid(path: string): Promise<boolean> {
  try {
    await run('nix-store', ['--check-validity', path], { env: nixEnv() })
    return true
  } catch {
    return false
  }
}

/**
 * Deletes paths from the local store, so that realising them again must fetch
 * them. Nix orders the deletes itself; paths still alive (a profile or GC root
 * refers to them) make it fail, which a test should see.
 */
export async function deleteFromStore(paths: readonly string[]): Promise<void> {
  if (paths.length === 0) return
  await run('nix-store', ['--delete', ...paths], { env: nixEnv(), maxBuffer: 16 << 20 })
}

/** A Nix binary cache key pair made by Nix itself (`nix-store --generate-binary-cache-key`). */
export async function nixCacheKey(
  dir: string,
  name: string,
): Promise<{ secretFile: string; publicKey: string }> {
  const secretFile = join(dir, `${name}.sec`)
  const publicFile = join(dir, `${name}.pub`)
  await run('nix-store', ['--generate-binary-cache-key', name, secretFile, publicFile], { env: nixEnv() })
  const { readFile } = await import('node:fs/promises')
  return { secretFile, publicKey: (await readFile(publicFile, 'utf8')).trim() }
}
