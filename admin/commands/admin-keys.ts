/**
 * `fleetmesh admin keygen | grant | install`: this machine's admin key, and the
 * certificate bundles that carry a grant from one admin (or the root key) to
 * another. They need no network: only key files on this machine.
 */
import { readFile } from 'node:fs/promises'
import { z } from 'zod'
import {
  CAPABILITIES,
  type Capability,
  decodeCanonical,
  decodeCertificate,
  encodeCanonical,
  issueCertificate,
  loadIdentity,
  loadOrCreateIdentity,
  machineName,
  PublicKey,
  type Scope,
  type SignedCertificate,
  signedCertificateSchema,
  tagName,
  verifyChain,
} from '../../keys/index.ts'
import {
  type CommandSpec,
  describeIssues,
  duration,
  fileSize,
  flag,
  fromBase64Url,
  list,
  output,
  parseCommand,
  required,
  str,
  toBase64Url,
  UsageError,
} from '../../lib/index.ts'
import {
  fleetFileSchema,
  loadAdminHome,
  paths,
  readFleetFile,
  writeAdminChain,
  writeFleetFile,
} from '../home.ts'
import { JSON_OPTION } from '../session.ts'

export const ADMIN_KEYGEN_COMMAND: CommandSpec = {
  name: 'admin keygen',
  summary: "Create this machine's admin key (or show the existing one) and print its public key.",
  usage: 'fleetmesh admin keygen [--json]',
  options: JSON_OPTION,
  examples: ['fleetmesh --home ~/.config/fleetmesh admin keygen'],
}

const GRANT_USAGE =
  'fleetmesh admin grant --subject <public-key> --caps deploy,enroll,read,admin (--all | --machines a,b --tags t1,t2) [--name <name>] [--valid 30d] [--json]'

export const ADMIN_GRANT_COMMAND: CommandSpec = {
  name: 'admin grant',
  summary:
    'Issue an admin certificate (needs the root key or the "admin" capability); prints a bundle for "admin install".',
  usage: GRANT_USAGE,
  options: {
    subject: {
      type: 'string',
      value: '<public-key>',
      description: 'the public key "admin keygen" printed on the new admin\'s machine',
      required: true,
    },
    caps: {
      type: 'string',
      multiple: true,
      value: 'deploy,enroll,read,admin',
      description: 'capabilities the certificate grants',
      required: true,
    },
    all: { type: 'boolean', description: 'scope: every machine (instead of --machines/--tags)' },
    machines: { type: 'string', multiple: true, value: 'a,b', description: 'scope: these machines' },
    tags: { type: 'string', multiple: true, value: 't1,t2', description: 'scope: machines with these tags' },
    name: {
      type: 'string',
      value: '<name>',
      description: 'who the certificate is for, shown in the audit log',
      default: 'admin-<first 8 characters of the key>',
    },
    valid: {
      type: 'string',
      value: '<duration>',
      description: 'how long the certificate is valid',
      default: '30d',
    },
    ...JSON_OPTION,
  },
  examples: [
    'fleetmesh admin grant --subject "$ALICE_KEY" --caps deploy,read --tags web --name alice --valid 90d',
  ],
}

const INSTALL_USAGE = 'fleetmesh admin install <bundle text | file holding it> [--json]'

export const ADMIN_INSTALL_COMMAND: CommandSpec = {
  name: 'admin install',
  summary: 'Install a certificate bundle produced by "admin grant" into --home.',
  usage: INSTALL_USAGE,
  options: JSON_OPTION,
  examples: ['fleetmesh admin install ./alice.bundle'],
}

const BUNDLE_PREFIX = 'fmadmin1.'
const bundleSchema = z.strictObject({
  fleet: fleetFileSchema,
  chain: z.array(signedCertificateSchema).min(1).max(4),
})

export async function adminKeygen(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, ADMIN_KEYGEN_COMMAND)
  const key = await loadOrCreateIdentity(paths(home).adminKey)
  output(flag(p, 'json'), { publicKey: key.publicKey.toString(), keyFile: paths(home).adminKey }, () =>
    [
      `admin key ${paths(home).adminKey}`,
      `public key ${key.publicKey}`,
      'Give the public key to a fleet admin for "fleetmesh admin grant".',
    ].join('\n'),
  )
}

/** The certificate name when --name is not given: recognisable, and traceable to the key. */
export function defaultAdminName(subject: PublicKey): string {
  return `admin-${subject.toString().slice(0, 8)}`
}

export async function adminGrant(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, ADMIN_GRANT_COMMAND)
  const subject = PublicKey.parse(required(p, 'subject', GRANT_USAGE))
  const caps = list(p, 'caps')
  if (caps.length === 0) throw new UsageError(`--caps is required\nusage: ${GRANT_USAGE}`)
  for (const c of caps) {
    if (!(CAPABILITIES as readonly string[]).includes(c))
      throw new UsageError(`unknown capability "${c}"; known: ${CAPABILITIES.join(', ')}`)
  }
  const machines = list(p, 'machines')
  const tags = list(p, 'tags')
  for (const m of machines)
    if (!machineName.safeParse(m).success)
      throw new UsageError(`--machines: "${m}" is not a valid machine name`)
  for (const t of tags)
    if (!tagName.safeParse(t).success) throw new UsageError(`--tags: "${t}" is not a valid tag`)
  if (flag(p, 'all') === machines.length + tags.length > 0) {
    throw new UsageError(`give either --all or --machines/--tags\nusage: ${GRANT_USAGE}`)
  }
  const scope: Scope = flag(p, 'all') ? { all: true } : { machines, tags }
  const fleet = await readFleetFile(home)
  const fleetRoot = PublicKey.parse(fleet.fleetRoot)
  const options = {
    subject,
    name: str(p, 'name') || defaultAdminName(subject),
    capabilities: caps as Capability[],
    scope,
    notAfter: Date.now() + duration(p, 'valid', 30 * 86_400_000),
  }
  let chain: z.infer<typeof bundleSchema>['chain']
  if ((await fileSize(paths(home).rootKey)) !== undefined) {
    chain = [issueCertificate(await loadIdentity(paths(home).rootKey), options)]
  } else {
    // Delegation: this admin signs, so the new certificate hangs below this admin's chain.
    const me = await loadAdminHome(home)
    verifyChain(me.chain, { root: fleetRoot, signer: me.key.publicKey, capability: 'admin' })
    chain = [...me.chain, issueCertificate(me.key, options)]
    verifyChain(chain, { root: fleetRoot, signer: subject, capability: caps[0] as Capability })
  }
  const bundle = BUNDLE_PREFIX + toBase64Url(encodeCanonical({ fleet, chain }))
  const issued = decodeCertificate(chain[chain.length - 1] as SignedCertificate)
  output(
    flag(p, 'json'),
    {
      bundle,
      serial: issued.serial,
      name: issued.name,
      capabilities: issued.capabilities,
      notAfter: new Date(issued.notAfter).toISOString(),
    },
    () =>
      [
        `Certificate for "${issued.name}" (${caps.join(', ')}), serial ${issued.serial}, valid until ${new Date(issued.notAfter).toISOString()}.`,
        `To revoke it later: fleetmesh admin revoke ${issued.serial}`,
        'Give this to them for "fleetmesh admin install" (as text, or saved to a file):',
        '',
        bundle,
      ].join('\n'),
  )
}

/** The bundle pasted as the argument, or read from the file it names. */
async function bundleText(arg: string, usage: string): Promise<string> {
  if (arg.startsWith(BUNDLE_PREFIX)) return arg.trim()
  let content: string
  try {
    content = await readFile(arg, 'utf8')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    throw new UsageError(
      code === 'ENOENT'
        ? `"${arg}" is neither a ${BUNDLE_PREFIX}… bundle nor an existing file\nusage: ${usage}`
        : `cannot read the bundle file ${arg}: ${(err as Error).message}`,
    )
  }
  const text = content.trim()
  if (!text.startsWith(BUNDLE_PREFIX))
    throw new UsageError(
      `${arg} does not hold a bundle: expected the ${BUNDLE_PREFIX}… text printed by "fleetmesh admin grant"`,
    )
  return text
}

export async function adminInstall(argv: string[], home: string): Promise<void> {
  const usage = INSTALL_USAGE
  const p = parseCommand(argv, ADMIN_INSTALL_COMMAND)
  const arg = p.positionals[0]
  if (arg === undefined)
    throw new UsageError(
      `give the ${BUNDLE_PREFIX}… text printed by "fleetmesh admin grant", or a file holding it\nusage: ${usage}`,
    )
  const text = await bundleText(arg, usage)
  let value: unknown
  try {
    value = decodeCanonical(fromBase64Url(text.slice(BUNDLE_PREFIX.length).trim()), 128 * 1024)
  } catch (err) {
    throw new UsageError(`the bundle is damaged (${(err as Error).message}); copy it again`)
  }
  const parsed = bundleSchema.safeParse(value)
  if (!parsed.success) throw new UsageError(`the bundle is invalid: ${describeIssues(parsed.error)}`)
  const key = await loadIdentity(paths(home).adminKey)
  const leaf = decodeCertificate(parsed.data.chain[parsed.data.chain.length - 1] as SignedCertificate)
  // Check the whole chain now (for the leaf's own first capability) so a bad bundle fails here.
  const leafAuthority = verifyChain(parsed.data.chain, {
    root: PublicKey.parse(parsed.data.fleet.fleetRoot),
    signer: key.publicKey,
    capability: leaf.capabilities[0] as Capability,
  }).leaf
  await writeFleetFile(home, parsed.data.fleet)
  await writeAdminChain(home, parsed.data.chain)
  output(
    flag(p, 'json'),
    {
      fleetId: parsed.data.fleet.fleetId,
      name: leafAuthority.name,
      capabilities: leafAuthority.capabilities,
    },
    () =>
      `installed: fleet "${parsed.data.fleet.fleetId}", certificate "${leafAuthority.name}" (${leafAuthority.capabilities.join(', ')}), valid until ${new Date(leafAuthority.notAfter).toISOString()}`,
  )
}
