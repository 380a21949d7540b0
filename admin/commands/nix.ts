/**
 * `fleetmesh nix keygen | push`: this admin's Nix binary cache key, and
 * pushing closures from the local Nix store into the coordinator's cache
 * without deploying them (`deploy --nix` pushes by itself).
 */
import { NixSigningKey, saveNixSigningKey } from '../../keys/index.ts'
import {
  type CommandSpec,
  fileSize,
  flag,
  output,
  parseCommand,
  str,
  UsageError,
  writeFileAtomic,
} from '../../lib/index.ts'
import { isStorePath } from '../../protocol/index.ts'
import { HomeError, loadAdminNixKey, paths, readFleetFile } from '../home.ts'
import {
  coordinatorCache,
  describeProgress,
  describePush,
  NixPushError,
  type PushProgress,
  type PushResult,
  pushClosures,
} from '../nix-push.ts'
import { JSON_OPTION, REMOTE_OPTIONS, withClient } from '../session.ts'

const KEYGEN_USAGE = 'fleetmesh nix keygen [--name <key name>] [--force] [--json]'
const PUSH_USAGE = 'fleetmesh nix push <store path>... [--coordinator <multiaddr>]... [--json]'

export const NIX_KEYGEN_COMMAND: CommandSpec = {
  name: 'nix keygen',
  summary: "Create this admin's Nix binary cache signing key and print its public key.",
  usage: KEYGEN_USAGE,
  options: {
    name: {
      type: 'string',
      value: '<key name>',
      description: 'the key name in signatures',
      default: '<fleet>-cache-1',
    },
    force: {
      type: 'boolean',
      description:
        'replace an existing key (closures signed with the old one stay trusted only via old manifests)',
    },
    ...JSON_OPTION,
  },
  examples: ['fleetmesh nix keygen --name acme-cache-2 --force'],
}

export const NIX_PUSH_COMMAND: CommandSpec = {
  name: 'nix push',
  summary: "Upload store paths' closures to the coordinator's Nix cache without deploying them.",
  usage: PUSH_USAGE,
  options: REMOTE_OPTIONS,
  examples: ['fleetmesh nix push /nix/store/abc…-nixos-system-web-1'],
}

export async function nixKeygen(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, NIX_KEYGEN_COMMAND)
  const files = paths(home)
  if (!flag(p, 'force') && (await fileSize(files.nixSecretKey)) !== undefined)
    throw new HomeError(
      `${files.nixSecretKey} already exists; pass --force to replace it (devices then trust closures ` +
        'signed with the old key only through manifests that still list its public key)',
    )
  const name = str(p, 'name') ?? `${(await readFleetFile(home)).fleetId}-cache-1`
  let key: NixSigningKey
  try {
    key = NixSigningKey.generate(name)
  } catch (err) {
    throw new UsageError(`--name: ${(err as Error).message}`)
  }
  await saveNixSigningKey(files.nixSecretKey, key)
  // As nix-store --generate-binary-cache-key writes it: "<name>:<base64>", no newline.
  await writeFileAtomic(files.nixPublicKey, key.publicKey.toString(), 0o644)
  output(
    flag(p, 'json'),
    {
      name,
      publicKey: key.publicKey.toString(),
      secretKeyFile: files.nixSecretKey,
      publicKeyFile: files.nixPublicKey,
    },
    () =>
      [
        `Nix signing key ${files.nixSecretKey} (keep it secret; it signs every closure you deploy)`,
        `public key ${key.publicKey}`,
        'Deploys trust it by default. To fetch from the fleet cache by hand, add it to trusted-public-keys in nix.conf.',
      ].join('\n'),
  )
}

/**
 * Prints push progress: with --json a JSON line per event on stdout (like
 * `watch`), else a human line on stderr about once a second; the summary goes
 * to `summary` (or, with --json, as a last JSON line).
 */
export function pushReporter(
  json: boolean,
  summary: (text: string) => void,
): { onProgress: (p: PushProgress) => void; done: (r: PushResult) => void } {
  return {
    onProgress: (p) => {
      if (json) process.stdout.write(`${JSON.stringify(p)}\n`)
      else process.stderr.write(`${describeProgress(p)}\n`)
    },
    done: (r) => {
      if (json) process.stdout.write(`${JSON.stringify({ type: 'pushed', ...r })}\n`)
      else summary(describePush(r))
    },
  }
}

export async function nixPush(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, NIX_PUSH_COMMAND)
  if (p.positionals.length === 0) throw new UsageError(`name the store paths to push\nusage: ${PUSH_USAGE}`)
  for (const path of p.positionals)
    if (!isStorePath(path))
      throw new UsageError(
        `"${path}" is not a store path: expected /nix/store/<32-character hash>-<name> (for a ./result link: "$(readlink -f result)")`,
      )
  const signingKey = await loadAdminNixKey(home)
  if (signingKey === undefined)
    throw new NixPushError(
      'no-signing-key',
      `there is no Nix signing key in ${home}; run "fleetmesh nix keygen" first`,
    )
  const reporter = pushReporter(flag(p, 'json'), (text) => process.stdout.write(`${text}\n`))
  const result = await withClient(home, p, (client) =>
    pushClosures(coordinatorCache(client), [...new Set(p.positionals)], {
      trustedKeys: [signingKey.publicKey],
      signingKey,
      onProgress: reporter.onProgress,
    }),
  )
  reporter.done(result)
}
