/**
 * Admin commands that talk to the coordinator: machines, deploy, watch, audit,
 * revoke. Each prints a human view by default and JSON with --json.
 */
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { open, stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { peerIdFromString } from '@libp2p/peer-id'
import { DOMAINS, machineName, PublicKey, tagName } from '../keys/index.ts'
import {
  duration,
  flag,
  list,
  output,
  type Parsed,
  parseCommand,
  str,
  table,
  UsageError,
} from '../lib/index.ts'
import {
  auditResult,
  fleetInfoResult,
  type MachineView,
  type Manifest,
  machinesResult,
  manifestSchema,
  revokeResult,
  type SubmitResult,
  sealEnvelope,
  submitResult,
  type UpdateState,
  uploadResult,
  verifyAuditLog,
  watchEvent,
} from '../protocol/index.ts'
import { AdminClient, AdminRequestError, UPLOAD_CHUNK_BYTES } from './client.ts'
import { loadAdminHome } from './home.ts'

const TERMINAL: readonly UpdateState[] = ['committed', 'rolled-back', 'failed', 'refused']

async function withClient<T>(home: string, p: Parsed, fn: (c: AdminClient) => Promise<T>): Promise<T> {
  const client = await AdminClient.connect(await loadAdminHome(home), list(p, 'coordinator'))
  try {
    return await fn(client)
  } finally {
    await client.close()
  }
}

function ago(ms: number | null): string {
  if (ms === null) return '-'
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.round(s / 60)}m ago` : `${Math.round(s / 3600)}h ago`
}

export function machinesTable(machines: readonly MachineView[]): string {
  return table(
    ['NAME', 'TAGS', 'ONLINE', 'CURRENT', 'DESIRED', 'STATE', 'LAST SEEN', 'PATH'],
    machines.map((m) => [
      m.name,
      m.tags.join(',') || '-',
      m.online ? 'yes' : 'no',
      m.currentGeneration ?? '-',
      m.desiredGeneration ?? '-',
      m.state === null ? '-' : m.error ? `${m.state} (${m.error.code})` : m.state,
      m.online ? 'now' : ago(m.lastSeen),
      m.path ?? '-',
    ]),
  )
}

const COMMON = { coordinator: { type: 'string', multiple: true }, json: { type: 'boolean' } } as const

export async function machines(argv: string[], home: string): Promise<void> {
  const p = parseCommand(argv, { ...COMMON }, 'fleetmesh machines [--json]')
  const result = await withClient(home, p, (c) => c.request({ op: 'machines' }, machinesResult))
  output(flag(p, 'json'), result, () =>
    result.length === 0 ? 'no machines enrolled yet' : machinesTable(result),
  )
}

// ------------------------------------------------------------------ deploy

const DEPLOY_USAGE =
  'fleetmesh deploy <archive.tar.gz> --to <machine|tag:name>[,...] [--generation <name>] [--health-check "<cmd> <args>"] ' +
  '[--health-timeout 30s] [--health-retries N] [--confirm-timeout 2m] [--expires 7d] [--url <http url>] [--no-watch] [--timeout 15m] [--json]'

export function parseTargets(items: string[]): { machines: string[]; tags: string[] } {
  const machines: string[] = []
  const tags: string[] = []
  for (const item of items) {
    if (item.startsWith('tag:')) {
      const t = item.slice(4)
      if (!tagName.safeParse(t).success) throw new UsageError(`--to: "${t}" is not a valid tag`)
      tags.push(t)
    } else {
      if (!machineName.safeParse(item).success)
        throw new UsageError(`--to: "${item}" is not a valid machine name (use tag:<name> for tags)`)
      machines.push(item)
    }
  }
  if (machines.length + tags.length === 0)
    throw new UsageError(`--to names no machines or tags\nusage: ${DEPLOY_USAGE}`)
  return { machines: [...new Set(machines)].sort(), tags: [...new Set(tags)].sort() }
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

export async function deploy(argv: string[], home: string): Promise<number> {
  const p = parseCommand(
    argv,
    {
      ...COMMON,
      to: { type: 'string', multiple: true },
      generation: { type: 'string' },
      'health-check': { type: 'string' },
      'health-timeout': { type: 'string' },
      'health-retries': { type: 'string' },
      'confirm-timeout': { type: 'string' },
      expires: { type: 'string' },
      url: { type: 'string', multiple: true },
      'no-watch': { type: 'boolean' },
      timeout: { type: 'string' },
    },
    DEPLOY_USAGE,
  )
  const file = p.positionals[0]
  if (file === undefined) throw new UsageError(`name the archive to deploy\nusage: ${DEPLOY_USAGE}`)
  const info = await stat(file).catch(() => undefined)
  if (info === undefined || !info.isFile()) throw new UsageError(`${file} is not a readable file`)
  const targets = parseTargets(list(p, 'to'))
  const json = flag(p, 'json')
  const progress = (msg: string) => {
    if (!json) process.stderr.write(`${msg}\n`)
  }
  const generation =
    str(p, 'generation') ??
    `${basename(file)
      .replace(/\.(tar\.gz|tgz|tar)$/, '')
      .replace(/[^A-Za-z0-9._+-]/g, '-')
      .slice(0, 80)}-${new Date().toISOString().replace(/[-:]/g, '').slice(0, 15)}`
  const healthArgv = str(p, 'health-check')
    ?.trim()
    .split(/\s+/)
    .filter((s) => s.length > 0)
  const urls = list(p, 'url')
  const sha256 = await sha256File(file)
  const size = info.size
  progress(`archive ${file}: ${size} bytes, sha256 ${sha256}`)

  return withClient(home, p, async (client) => {
    await upload(client, file, sha256, size, progress)
    const now = Date.now()
    const base: Omit<Manifest, 'sequence'> = {
      v: 1,
      fleetId: client.home.fleet.fleetId,
      id: randomBytes(16).toString('hex'),
      rolloutId: randomBytes(16).toString('hex'),
      generation,
      targets,
      payload: {
        kind: 'archive',
        sha256,
        size,
        sources: [{ kind: 'coordinator' }, ...urls.map((url) => ({ kind: 'http' as const, url }))],
      },
      activation: 'profile',
      healthCheck:
        healthArgv && healthArgv.length > 0
          ? {
              command: healthArgv,
              timeoutMs: duration(p, 'health-timeout', 30_000),
              retries: Number(str(p, 'health-retries') ?? 2),
              intervalMs: 1000,
            }
          : null,
      confirmTimeoutMs: duration(p, 'confirm-timeout', 120_000),
      issuedAt: now,
      notBefore: now - 60_000,
      expiresAt: now + duration(p, 'expires', 7 * 86_400_000),
    }
    let result: SubmitResult | undefined
    // The sequence must exceed every earlier manifest's; if another admin submits
    // between our read and our submit, the coordinator says so and we retry.
    for (let attempt = 0; result === undefined; attempt++) {
      const fleet = await client.request({ op: 'fleet-info' }, fleetInfoResult)
      const manifest: Manifest = { ...base, sequence: fleet.maxSequence + 1 }
      const envelope = sealEnvelope(
        manifestSchema,
        DOMAINS.manifest,
        manifest,
        client.home.key,
        client.home.chain,
      )
      try {
        result = await client.request({ op: 'submit-manifest', envelope }, submitResult)
      } catch (err) {
        if (!(err instanceof AdminRequestError && err.code === 'stale-sequence' && attempt < 3)) throw err
      }
    }
    progress(
      `rollout ${result.rolloutId}: manifest seq ${result.sequence} for ${result.machines.length} machine(s): ${result.machines.join(', ') || '(none enrolled yet)'}`,
    )
    if (result.unknown.length > 0)
      progress(`not enrolled (will get it once enrolled): ${result.unknown.join(', ')}`)
    if (flag(p, 'no-watch')) {
      output(json, result, () => `submitted rollout ${result.rolloutId}`)
      return 0
    }
    const final = await watchRollout(
      client,
      result.rolloutId,
      result.machines,
      duration(p, 'timeout', 15 * 60_000),
      json,
    )
    return final
  })
}

async function upload(
  client: AdminClient,
  file: string,
  sha256: string,
  size: number,
  progress: (m: string) => void,
): Promise<void> {
  const fs = await client.open({ op: 'upload-blob', sha256, size })
  try {
    const start = await client.readResult(fs, uploadResult)
    if (start.complete) {
      progress('archive already on the coordinator')
      return
    }
    const offset = start.offset ?? 0
    if (offset > 0) progress(`resuming upload at ${offset} bytes`)
    const handle = await open(file, 'r')
    try {
      let sent = offset
      let lastShown = 0
      const buf = Buffer.alloc(UPLOAD_CHUNK_BYTES)
      while (sent < size) {
        const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, size - sent), sent)
        if (bytesRead === 0) throw new Error(`${file} shrank while uploading`)
        await fs.send(new Uint8Array(buf.subarray(0, bytesRead)))
        sent += bytesRead
        if (sent - lastShown >= 4 * 1024 * 1024 || sent === size) {
          progress(`uploaded ${sent}/${size} bytes (${Math.round((sent / size) * 100)}%)`)
          lastShown = sent
        }
      }
    } finally {
      await handle.close()
    }
    await fs.close()
    const done = await client.readResult(fs, uploadResult, 120_000)
    if (!done.complete)
      throw new AdminRequestError(
        'upload-incomplete',
        'coordinator did not receive the whole archive; run deploy again to resume',
      )
  } finally {
    if (fs.stream.status === 'open') await fs.close().catch(() => {})
  }
}

// ------------------------------------------------------------------ watch

function settled(m: MachineView, rolloutId: string): boolean {
  if (m.desiredRolloutId !== null && m.desiredRolloutId !== rolloutId) return true // superseded by a newer rollout
  return m.rolloutId === rolloutId && m.state !== null && TERMINAL.includes(m.state)
}

function describe(m: MachineView): string {
  const pct =
    m.progress && m.progress.total > 0 ? ` ${Math.round((m.progress.done / m.progress.total) * 100)}%` : ''
  const err = m.error ? ` — ${m.error.code}: ${m.error.message}` : ''
  return `${m.name.padEnd(20)} ${(m.state ?? '-') + pct}${m.currentGeneration ? ` (on ${m.currentGeneration})` : ''}${err}`
}

/** Streams progress until every targeted machine settles; returns the exit code. */
export async function watchRollout(
  client: AdminClient,
  rolloutId: string | null,
  expected: string[],
  timeoutMs: number,
  json: boolean,
): Promise<number> {
  const fs = await client.open({ op: 'watch', rolloutId })
  const view = new Map<string, MachineView>()
  const deadline = Date.now() + timeoutMs
  const emit = (obj: unknown, human: string) => {
    if (json) process.stdout.write(`${JSON.stringify(obj)}\n`)
    else process.stdout.write(`${human}\n`)
  }
  try {
    const targets = new Set(expected)
    while (true) {
      const remaining = deadline - Date.now()
      if (remaining <= 0) {
        emit(
          { type: 'timeout', rolloutId },
          `timed out after ${Math.round(timeoutMs / 1000)} s; machines not settled: ${[...targets]
            .filter((n) => {
              const m = view.get(n)
              return !(m && rolloutId && settled(m, rolloutId))
            })
            .join(', ')}`,
        )
        return 2
      }
      let event: ReturnType<typeof watchEvent.parse>
      try {
        event = await client.readResult(fs, watchEvent, remaining)
      } catch (err) {
        if ((err as Error).name === 'TimeoutError') continue
        throw err
      }
      if (event.type === 'snapshot') {
        for (const m of event.machines) {
          view.set(m.name, m)
          if (rolloutId !== null && expected.length === 0 && m.desiredRolloutId === rolloutId)
            targets.add(m.name)
        }
        if (!json)
          for (const n of targets) {
            const m = view.get(n)
            if (m) process.stdout.write(`${describe(m)}\n`)
          }
      } else if (event.type === 'manifest') {
        if (rolloutId === null) emit(event, `new rollout ${event.rolloutId} → ${event.machines.join(', ')}`)
        continue
      } else {
        const before = view.get(event.machine.name)
        view.set(event.machine.name, event.machine)
        if (rolloutId === null || targets.has(event.machine.name)) {
          if (
            before?.state !== event.machine.state ||
            before?.online !== event.machine.online ||
            event.machine.progress
          ) {
            emit(
              { type: event.type, machine: event.machine },
              event.type === 'status'
                ? describe(event.machine)
                : `${event.machine.name.padEnd(20)} ${event.type}`,
            )
          }
        }
      }
      if (rolloutId !== null && targets.size > 0) {
        const all = [...targets].map((n) => view.get(n))
        if (all.every((m) => m !== undefined && settled(m, rolloutId))) {
          const machinesNow = all as MachineView[]
          const failed = machinesNow.filter(
            (m) => m.state !== 'committed' && m.desiredRolloutId === rolloutId,
          )
          emit(
            { type: 'settled', rolloutId, machines: machinesNow },
            `\nrollout ${rolloutId} settled: ${machinesNow.length - failed.length} committed, ${failed.length} not\n\n${machinesTable(machinesNow)}`,
          )
          return failed.length === 0 ? 0 : 1
        }
      }
    }
  } finally {
    fs.abort(new Error('watch finished'))
  }
}

export async function watch(argv: string[], home: string): Promise<number> {
  const p = parseCommand(
    argv,
    { ...COMMON, rollout: { type: 'string' }, timeout: { type: 'string' } },
    'fleetmesh watch [--rollout <id>] [--timeout 15m] [--json]',
  )
  const rollout = str(p, 'rollout') ?? null
  if (rollout !== null && !/^[0-9a-f]{32}$/.test(rollout))
    throw new UsageError(`--rollout must be a 32-digit hex rollout id, got "${rollout}"`)
  return withClient(home, p, (c) =>
    watchRollout(
      c,
      rollout,
      [],
      duration(p, 'timeout', rollout === null ? 365 * 86_400_000 : 15 * 60_000),
      flag(p, 'json'),
    ),
  )
}

// ------------------------------------------------------------------ audit and revoke

export async function audit(argv: string[], home: string): Promise<number> {
  const p = parseCommand(
    argv,
    { ...COMMON, limit: { type: 'string' }, verify: { type: 'boolean' } },
    'fleetmesh audit [--verify] [--limit N] [--json]',
  )
  const limit = Number(str(p, 'limit') ?? 50)
  if (!Number.isInteger(limit) || limit < 1) throw new UsageError('--limit must be a positive whole number')
  return withClient(home, p, async (c) => {
    // The whole log is fetched in pages: verification needs every link of the chain.
    const records: ReturnType<typeof auditResult.parse> = []
    for (let after = 0; ; ) {
      const page = await c.request({ op: 'audit', after, limit: 1000 }, auditResult)
      records.push(...page)
      if (page.length < 1000) break
      after = (page[page.length - 1] as { index: number }).index
    }
    const coordinatorKey = PublicKey.fromPeerId(peerIdFromString(c.home.fleet.coordinator.peerId))
    const verdict = verifyAuditLog(records, { coordinator: coordinatorKey })
    const shown = records.slice(-limit)
    output(
      flag(p, 'json'),
      {
        verified: verdict,
        // bytes do not survive JSON: the request shows as its size, the hash as hex
        records: shown.map(({ prevHash: _prev, sig: _sig, request, hash, ...rest }) => ({
          ...rest,
          request: request ? request.byteLength : null,
          hash: Buffer.from(hash).toString('hex'),
        })),
      },
      () =>
        [
          table(
            ['#', 'TIME', 'OUTCOME', 'ACTION', 'ACTOR', 'DETAIL'],
            shown.map((r) => [
              String(r.index),
              new Date(r.at).toISOString(),
              r.outcome,
              r.action,
              r.actor?.slice(0, 12) ?? `peer ${r.peerId.slice(-8)}`,
              r.detail.slice(0, 80),
            ]),
          ),
          '',
          verdict.ok
            ? `audit log verified: ${verdict.count} records, hash chain intact, every signature valid`
            : `AUDIT LOG INVALID at record ${verdict.index}: ${verdict.problem}`,
        ].join('\n'),
    )
    return flag(p, 'verify') && !verdict.ok ? 1 : verdict.ok ? 0 : 1
  })
}

export async function revoke(argv: string[], home: string): Promise<void> {
  const p = parseCommand(
    argv,
    { ...COMMON, reason: { type: 'string' } },
    'fleetmesh admin revoke <serial> --reason "<why>" [--json]',
  )
  const serial = p.positionals[0]
  if (serial === undefined || !/^[0-9a-f]{32}$/.test(serial))
    throw new UsageError('give the certificate serial (32 hex digits) to revoke')
  const result = await withClient(home, p, (c) =>
    c.request({ op: 'revoke', serial, reason: str(p, 'reason') ?? 'revoked' }, revokeResult),
  )
  output(flag(p, 'json'), result, () => `revoked certificate ${result.revoked}`)
}
