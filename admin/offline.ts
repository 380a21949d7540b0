/**
 * Admin commands that need no network: creating a fleet, granting and installing
 * admin certificates, and issuing enrollment tokens. They only touch key files
 * on this machine.
 */
import { mkdir, stat } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import { z } from 'zod'
import {
  CAPABILITIES,
  type Capability,
  decodeCanonical,
  decodeCertificate,
  encodeCanonical,
  issueCertificate,
  issueToken,
  loadIdentity,
  loadOrCreateIdentity,
  machineName,
  PrivateKey,
  PublicKey,
  type Scope,
  type SignedCertificate,
  saveIdentity,
  signedCertificateSchema,
  tagName,
  verifyChain,
} from '../keys/index.ts'
import {
  describeIssues,
  duration,
  flag,
  fromBase64Url,
  list,
  output,
  parseCommand,
  required,
  str,
  toBase64Url,
  UsageError,
  writeFileAtomic,
} from '../lib/index.ts'
import { COORDINATOR_CONFIG_FILE, type CoordinatorConfig, IDENTITY_FILE } from '../protocol/index.ts'
import {
  encodeChain,
  type FleetFile,
  fleetFileSchema,
  HomeError,
  loadAdminHome,
  paths,
  readFleetFile,
  writeFleetFile,
} from './home.ts'

const YEAR = 365 * 86_400_000

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  )
}

const INIT_USAGE =
  'fleetmesh init --fleet <id> --coordinator-state <dir> --coordinator-addr <multiaddr>... [--name <admin>] [--home <dir>] [--json]'

export async function init(argv: string[], home: string): Promise<void> {
  const p = parseCommand(
    argv,
    {
      fleet: { type: 'string' },
      'coordinator-state': { type: 'string' },
      'coordinator-addr': { type: 'string', multiple: true },
      name: { type: 'string' },
      valid: { type: 'string' },
      json: { type: 'boolean' },
    },
    INIT_USAGE,
  )
  const fleetId = required(p, 'fleet', INIT_USAGE)
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(fleetId))
    throw new UsageError(`--fleet "${fleetId}": use lowercase letters, digits and "-"`)
  const coordDir = resolve(required(p, 'coordinator-state', INIT_USAGE))
  const addrs = list(p, 'coordinator-addr')
  if (addrs.length === 0)
    throw new UsageError(
      `give at least one --coordinator-addr (e.g. /ip4/203.0.113.7/tcp/4001)\nusage: ${INIT_USAGE}`,
    )
  for (const a of addrs)
    if (!a.startsWith('/')) throw new UsageError(`--coordinator-addr "${a}" is not a multiaddr`)
  const p2 = paths(home)
  for (const f of [p2.fleet, p2.rootKey]) {
    if (await exists(f))
      throw new HomeError(`${f} already exists: this directory already holds a fleet. Use another --home.`)
  }
  const root = PrivateKey.generate()
  const admin = await loadOrCreateIdentity(p2.adminKey)
  const chain = [
    issueCertificate(root, {
      subject: admin.publicKey,
      name: str(p, 'name') ?? 'owner',
      capabilities: [...CAPABILITIES],
      scope: { all: true },
      notAfter: Date.now() + duration(p, 'valid', YEAR),
    }),
  ]
  await mkdir(coordDir, { recursive: true, mode: 0o700 })
  const coordKeyPath = join(coordDir, IDENTITY_FILE)
  if (await exists(coordKeyPath))
    throw new HomeError(`${coordKeyPath} already exists; choose an empty --coordinator-state`)
  const coordinator = PrivateKey.generate()
  await saveIdentity(coordKeyPath, coordinator)
  const config: CoordinatorConfig = { fleetId, fleetRoot: root.publicKey.toString() }
  await writeFileAtomic(
    join(coordDir, COORDINATOR_CONFIG_FILE),
    `${JSON.stringify(config, null, 2)}\n`,
    0o600,
  )
  await saveIdentity(p2.rootKey, root)
  await writeFileAtomic(p2.adminChain, `${encodeChain(chain)}\n`, 0o600)
  const fleet: FleetFile = {
    fleetId,
    fleetRoot: root.publicKey.toString(),
    coordinator: { peerId: coordinator.toPeerId().toString(), addrs },
  }
  await writeFleetFile(home, fleet)
  output(
    flag(p, 'json'),
    { ...fleet, admin: admin.publicKey.toString(), home, coordinatorState: coordDir },
    () =>
      [
        `fleet "${fleetId}" created in ${home}`,
        `  fleet root key     ${p2.rootKey}  (move it offline; it only signs admin certificates)`,
        `  your admin key     ${admin.publicKey}  (all capabilities, whole fleet)`,
        `  coordinator        ${fleet.coordinator.peerId}`,
        `  coordinator state  ${coordDir}  (start it with: fleetmesh coordinator --state ${coordDir})`,
      ].join('\n'),
  )
}

// ------------------------------------------------------------------ admin keys and grants

const BUNDLE_PREFIX = 'fmadmin1.'
const bundleSchema = z.strictObject({
  fleet: fleetFileSchema,
  chain: z.array(signedCertificateSchema).min(1).max(4),
})

export async function adminKeygen(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, { json: { type: 'boolean' } }, 'fleetmesh admin keygen [--json]')
  const key = await loadOrCreateIdentity(paths(home).adminKey)
  output(flag(p, 'json'), { publicKey: key.publicKey.toString(), keyFile: paths(home).adminKey }, () =>
    [
      `admin key ${paths(home).adminKey}`,
      `public key ${key.publicKey}`,
      'Give the public key to a fleet admin for "fleetmesh admin grant".',
    ].join('\n'),
  )
}

const GRANT_USAGE =
  'fleetmesh admin grant --subject <public-key> --name <name> --caps deploy,enroll,read,admin (--all | --machines a,b --tags t1,t2) [--valid 30d] [--json]'

export async function adminGrant(argv: string[], home: string): Promise<void> {
  const p = parseCommand(
    argv,
    {
      subject: { type: 'string' },
      name: { type: 'string' },
      caps: { type: 'string', multiple: true },
      machines: { type: 'string', multiple: true },
      tags: { type: 'string', multiple: true },
      all: { type: 'boolean' },
      valid: { type: 'string' },
      json: { type: 'boolean' },
    },
    GRANT_USAGE,
  )
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
    name: required(p, 'name', GRANT_USAGE),
    capabilities: caps as Capability[],
    scope,
    notAfter: Date.now() + duration(p, 'valid', 30 * 86_400_000),
  }
  let chain: z.infer<typeof bundleSchema>['chain']
  if (await exists(paths(home).rootKey)) {
    chain = [issueCertificate(await loadIdentity(paths(home).rootKey), options)]
  } else {
    // Delegation: this admin signs, so the new certificate hangs below this admin's chain.
    const me = await loadAdminHome(home)
    verifyChain(me.chain, { root: fleetRoot, signer: me.key.publicKey, capability: 'admin' })
    chain = [...me.chain, issueCertificate(me.key, options)]
    verifyChain(chain, { root: fleetRoot, signer: subject, capability: caps[0] as Capability })
  }
  const bundle = BUNDLE_PREFIX + toBase64Url(encodeCanonical({ fleet, chain }))
  output(flag(p, 'json'), { bundle }, () =>
    [
      `Certificate for "${options.name}" (${caps.join(', ')}). Give this to them for "fleetmesh admin install":`,
      '',
      bundle,
    ].join('\n'),
  )
}

export async function adminInstall(argv: string[], home: string): Promise<void> {
  const usage = 'fleetmesh admin install <bundle> [--json]'
  const p = parseCommand(argv, { json: { type: 'boolean' } }, usage)
  const text = p.positionals[0]
  if (text === undefined || !text.startsWith(BUNDLE_PREFIX))
    throw new UsageError(
      `give the ${BUNDLE_PREFIX}… text printed by "fleetmesh admin grant"\nusage: ${usage}`,
    )
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
  await writeFileAtomic(paths(home).adminChain, `${encodeChain(parsed.data.chain)}\n`, 0o600)
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

// ------------------------------------------------------------------ enrollment tokens

const ENROLL_USAGE = 'fleetmesh enroll <machine> [--tag <tag>]... [--ttl 24h] [--json]'

export async function enroll(argv: string[], home: string): Promise<void> {
  const p = parseCommand(
    argv,
    { tag: { type: 'string', multiple: true }, ttl: { type: 'string' }, json: { type: 'boolean' } },
    ENROLL_USAGE,
  )
  const machine = p.positionals[0]
  if (machine === undefined) throw new UsageError(`name the machine to enroll\nusage: ${ENROLL_USAGE}`)
  if (!machineName.safeParse(machine).success) {
    throw new UsageError(
      `"${machine}" is not a valid machine name: lowercase letters, digits and inner hyphens, at most 63`,
    )
  }
  const tags = list(p, 'tag')
  for (const t of tags)
    if (!tagName.safeParse(t).success) throw new UsageError(`--tag "${t}" is not a valid tag`)
  const me = await loadAdminHome(home)
  // Fail here, not on the device, when this admin may not enroll the machine.
  verifyChain(me.chain, {
    root: me.fleetRoot,
    signer: me.key.publicKey,
    capability: 'enroll',
    target: { kind: 'new-machine', name: machine, tags },
  })
  const ttlMs = duration(p, 'ttl', 86_400_000)
  const token = issueToken(me.key, me.chain, {
    fleetRoot: me.fleetRoot,
    coordinator: me.fleet.coordinator,
    machine,
    tags,
    ttlMs,
  })
  output(
    flag(p, 'json'),
    { machine, tags, expiresAt: new Date(Date.now() + ttlMs).toISOString(), token },
    () =>
      [
        `Enrollment token for "${machine}"${tags.length ? ` (tags ${tags.join(', ')})` : ''}, single use, valid ${Math.round(ttlMs / 3_600_000)} h. On the device run:`,
        '',
        `  fleetmesh agent --state /var/lib/fleetmesh --token ${token}`,
      ].join('\n'),
  )
}
