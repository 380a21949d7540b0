/**
 * Closure transfer: how fast a NixOS system closure reaches a device's store
 * over the mesh, against Nix copying the same closure from a local file cache.
 *
 * The closure is a fake system of 101 paths and ~100 MiB of random bytes
 * (testkit/nix), built fresh each run. Each figure is the median of `runs`,
 * with the closure deleted from the store before each one.
 *
 *  - reference: `nix copy --from file://<dir>?compression=none`, the fastest
 *    way Nix itself realises a closure from a binary cache (no network);
 *  - push: `fleetmesh nix push` through the CLI into a real coordinator process;
 *  - realisation over the mesh: the NixOS activator's fetch() in this process,
 *    on an enrolled libp2p host, against that coordinator (listing, signature
 *    checks, NAR download, nix-store --realise through the loopback cache);
 *  - deploy: a real agent process, `deploy --nix … --mode test`, from the
 *    manifest's arrival to 'committed' (fetch + switch-to-configuration + confirm).
 *
 * Then a breakdown of the mesh realisation (listing, first byte, NAR downloads
 * one after another and eight at a time), to show where the time goes.
 */
import { execFile } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, rm, stat, unlink } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { peerIdFromString } from '@libp2p/peer-id'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAdminHome } from '../admin/home.ts'
import { meshNixCache, type NixCacheSource } from '../agent/nix-cache-client.ts'
import { nixosActivator } from '../agent/nixos-activator.ts'
import type { FleetHost } from '../net/index.ts'
import { buildManifest, type Manifest, sha256HexOfNixHash } from '../protocol/index.ts'
import { enrolledHost } from '../testkit/enrolled-host.ts'
import { type Proc, TestFleet } from '../testkit/harness.ts'
import {
  buildFakeSystem,
  closureOf,
  deleteFromStore,
  isValid,
  nixCacheKey,
  nixEnv,
  nixUnavailable,
} from '../testkit/nix/index.ts'
import { fmt, line, percentile } from './measure.ts'

const execFileAsync = promisify(execFile)
const MB = 1e6

interface PathInfo {
  path: string
  narHash: string
  narSize: number
}

/** Runs a Nix command with the test settings; rejects with its stderr when it fails. */
async function nixCmd(argv: string[], env: NodeJS.ProcessEnv = {}): Promise<string> {
  try {
    const { stdout } = await execFileAsync(argv[0] as string, argv.slice(1), {
      env: nixEnv(env),
      maxBuffer: 64 << 20,
    })
    return stdout
  } catch (err) {
    const e = err as Error & { stderr?: string }
    throw new Error(`${argv.join(' ')} failed: ${e.stderr?.trim() || e.message}`)
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now()
  await fn()
  return (performance.now() - t0) / 1000
}

const median = (xs: readonly number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  )
const rate = (bytes: number, seconds: number) => `${fmt(bytes / MB / seconds, 0)} MB/s`
const secs = (s: number) => `${fmt(s, 2)} s`
const spread = (xs: readonly number[]) => `(runs: ${xs.map((x) => fmt(x, 2)).join(', ')} s)`

/**
 * A static HTTP server for a `nix copy --to file://` cache on 127.0.0.1, as a
 * second reference: Nix fetching over loopback HTTP, which is how the agent's
 * Nix gets every NAR too (agent/nix-substituter.ts).
 */
async function serveCache(root: string): Promise<{ url: string; close: () => Promise<void> }> {
  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://cache').pathname
    const file = join(root, ...path.split('/').filter((s) => s !== '' && s !== '..'))
    stat(file).then(
      (s) => {
        res.writeHead(200, { 'content-length': s.size })
        createReadStream(file).pipe(res)
      },
      () => res.writeHead(404).end(),
    )
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** Records every NAR download the activator makes through the mesh cache. */
interface Trace {
  closureMs: number
  fetches: { start: number; end: number; bytes: number }[]
  firstByte: number | undefined
  maxConcurrent: number
}

function tracedCache(inner: NixCacheSource, trace: Trace): NixCacheSource {
  let active = 0
  return {
    async closure(storePath, signal) {
      const t0 = performance.now()
      const result = await inner.closure(storePath, signal)
      trace.closureMs = performance.now() - t0
      return result
    },
    async fetchNar(sha256, size, dest, onProgress, signal, digest) {
      const start = performance.now()
      active += 1
      trace.maxConcurrent = Math.max(trace.maxConcurrent, active)
      try {
        await inner.fetchNar(
          sha256,
          size,
          dest,
          (done) => {
            if (done > 0 && trace.firstByte === undefined) trace.firstByte = performance.now()
            onProgress(done)
          },
          signal,
          digest,
        )
      } finally {
        active -= 1
        trace.fetches.push({ start, end: performance.now(), bytes: size })
      }
    },
  }
}

export async function benchNix(runs = 3): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  const unavailable = nixUnavailable()
  if (unavailable !== undefined) {
    console.log(`  skipped, Nix cannot be used here: ${unavailable.replace(/^they need /, 'it needs ')}`)
    return out
  }
  const fleet = await TestFleet.create()
  // Everything lives in the fleet's temporary directory, which fleet.stop() removes.
  const dir = join(fleet.dir, 'nix-bench')
  await mkdir(dir)
  let host: FleetHost | undefined
  let http: Awaited<ReturnType<typeof serveCache>> | undefined
  let closure: string[] = []
  const roots: string[] = []
  const forget = async () => {
    for (const r of roots) await unlink(r).catch(() => {})
    await deleteFromStore(closure)
  }
  try {
    // ---- the closure
    const tag = `bench-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`
    const buildS = await timed(async () => {
      closure = await closureOf(await buildFakeSystem({ tag, deps: 100, kb: 1024 }))
    })
    const top = closure.find((p) => p.includes(`-nixos-system-${tag}`)) as string
    const infos = JSON.parse(await nixCmd(['nix', 'path-info', '--json', '--recursive', top])) as PathInfo[]
    const bytes = infos.reduce((n, i) => n + i.narSize, 0)
    console.log(
      `Closure transfer, ${runs} runs each, median (the closure is deleted from the store before each)`,
    )
    line('closure', `${closure.length} paths, ${fmt(bytes / MB, 1)} MB (built in ${fmt(buildS, 1)} s)`)
    out['closure paths'] = closure.length
    out['closure MB'] = bytes / MB

    // ---- reference: Nix copying from a local file:// binary cache
    const key = await nixCacheKey(dir, `${tag}-ref`)
    const cacheUrl = `file://${join(dir, 'cache')}`
    await nixCmd(['nix', 'copy', '--to', `${cacheUrl}?compression=none&secret-key=${key.secretFile}`, top])

    // ---- fleetmesh: a coordinator process, the admin CLI, an enrolled in-process agent host
    await fleet.startCoordinator(['--idle-timeout', '10m'])
    const keygen = await fleet.json<{ publicKey: string }>(['nix', 'keygen'])
    const push = await fleet.cli(['nix', 'push', top])
    if (push.code !== 0) throw new Error(`fleetmesh nix push failed: ${push.stderr}`)
    const pushS = push.ms / 1000
    const enrolled = await enrolledHost(fleet, 'bench-nix', ['bench'], fleet.dir)
    host = enrolled.host
    const coordinatorId = peerIdFromString(enrolled.coordinator)
    const coordAddr = multiaddr(`/ip4/127.0.0.1/tcp/${fleet.port}`)
    const manifest: Manifest = buildManifest({
      fleetId: (await loadAdminHome(fleet.home)).fleet.fleetId,
      sequence: 1,
      generation: tag,
      targets: { machines: ['bench-nix'], tags: [] },
      payload: { kind: 'nix', storePath: top, substituters: [], trustedPublicKeys: [keygen.publicKey] },
      activation: 'test',
    })

    const served = await serveCache(join(dir, 'cache'))
    http = served
    const reference: number[] = []
    const httpReference: number[] = []
    const mesh: number[] = []
    const traces: Trace[] = []
    for (let i = 0; i < runs; i++) {
      await forget()
      const xdg = join(dir, `xdg-ref-${i}`)
      reference.push(
        await timed(() =>
          nixCmd(['nix', 'copy', '--from', cacheUrl, top, '--option', 'trusted-public-keys', key.publicKey], {
            XDG_CACHE_HOME: xdg,
          }),
        ),
      )
      if (!(await isValid(top))) throw new Error(`nix copy --from ${cacheUrl} did not realise ${top}`)

      await forget()
      httpReference.push(
        await timed(() =>
          nixCmd(
            ['nix', 'copy', '--from', served.url, top, '--option', 'trusted-public-keys', key.publicKey],
            {
              XDG_CACHE_HOME: join(dir, `xdg-http-${i}`),
            },
          ),
        ),
      )
      if (!(await isValid(top))) throw new Error(`nix copy --from ${served.url} did not realise ${top}`)

      await forget()
      const root = join(dir, `agent-${i}`)
      roots.push(join(root, 'gcroots', 'pending'))
      const trace: Trace = { closureMs: 0, fetches: [], firstByte: undefined, maxConcurrent: 0 }
      const activator = nixosActivator({
        root,
        cache: tracedCache(meshNixCache(host, coordinatorId), trace),
        profile: join(root, 'profile', 'system'),
        env: nixEnv(),
      })
      await host.dial(coordAddr)
      const t0 = performance.now()
      await activator.fetch(manifest, () => {}, new AbortController().signal)
      const seconds = (performance.now() - t0) / 1000
      mesh.push(seconds)
      traces.push(Object.assign(trace, { t0, seconds }))
      if (!(await isValid(top))) throw new Error(`the activator's fetch did not realise ${top}`)
    }
    const ref = median(reference)
    const fm = median(mesh)
    line('reference: nix copy --from file://…?compression=none', `${secs(ref)}, ${rate(bytes, ref)}`)
    console.log(`    ${spread(reference)}`)
    const viaHttp = median(httpReference)
    line('  context: the same cache over http://127.0.0.1', `${secs(viaHttp)}, ${rate(bytes, viaHttp)}`)
    line('fleetmesh nix push via the CLI (1 run, incl. Node start)', `${secs(pushS)}, ${rate(bytes, pushS)}`)
    line('fleetmesh realisation over the mesh (activator fetch)', `${secs(fm)}, ${rate(bytes, fm)}`)
    console.log(`    ${spread(mesh)}`)
    line('ratio fleetmesh / reference throughput (goal ≥ 0.5)', fmt(ref / fm, 2))
    out['reference copy s'] = ref
    out['http reference copy s'] = viaHttp
    out['push s'] = pushS
    out['mesh realise s'] = fm
    out['mesh/reference ratio'] = ref / fm

    // ---- a real agent process: deploy --mode test, manifest → committed
    await forget()
    const agentName = 'bench-agent'
    const agentProfile = join(fleet.dir, 'profiles', agentName, 'system')
    await mkdir(join(fleet.dir, 'profiles', agentName), { recursive: true })
    const agent: Proc = fleet.startAgent(
      agentName,
      [
        '--activator',
        'nixos',
        '--nix-profile',
        agentProfile,
        '--pass-env',
        'FLEETMESH_FAKE_SWITCH_LOG',
        '--token',
        await fleet.token(agentName, ['bench']),
      ],
      nixEnv({ FLEETMESH_FAKE_SWITCH_LOG: join(fleet.dir, 'switch.log') }),
    )
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${agentName} connected`)
    roots.push(join(fleet.agentState(agentName), 'nix', 'gcroots', 'pending'))
    const deployS: number[] = []
    const deployFetchS: number[] = []
    for (let i = 0; i < runs; i++) {
      await forget()
      const from = agent.events.length
      const after = (pred: (e: Record<string, unknown>) => boolean) => (e: Record<string, unknown>) =>
        agent.events.indexOf(e) >= from && pred(e)
      const d = await fleet.cli([
        'deploy',
        '--nix',
        top,
        '--to',
        agentName,
        '--mode',
        'test',
        '--generation',
        `${tag}-${i}`,
        '--no-watch',
      ])
      if (d.code !== 0) throw new Error(`deploy failed: ${d.stderr}`)
      const at = async (what: string, pred: (e: Record<string, unknown>) => boolean) =>
        Date.parse(String((await agent.waitFor(after(pred), 120_000, what)).at))
      const received = await at('manifest', (e) => e.event === 'manifest')
      const end = await at('committed', (e) => e.event === 'status' && e.state === 'committed')
      const verified = await at('verified', (e) => e.event === 'status' && e.state === 'verified')
      deployS.push((end - received) / 1000)
      deployFetchS.push((verified - received) / 1000)
    }
    line(
      'agent process deploy --mode test: manifest → committed',
      `${secs(median(deployS))}, ${rate(bytes, median(deployS))}`,
    )
    line(
      '  of which manifest → verified (fetch)',
      `${secs(median(deployFetchS))}, ${rate(bytes, median(deployFetchS))}`,
    )
    console.log(`    ${spread(deployS)}`)
    out['deploy test s'] = median(deployS)
    out['deploy fetch s'] = median(deployFetchS)

    // ---- where the mesh realisation's time goes (the median run)
    const mid = traces.find((t) => (t as Trace & { seconds: number }).seconds === fm) as Trace & {
      t0: number
      seconds: number
    }
    const fetchSum = mid.fetches.reduce((n, f) => n + f.end - f.start, 0) / 1000
    const lastEnd = Math.max(...mid.fetches.map((f) => f.end))
    const firstStart = Math.min(...mid.fetches.map((f) => f.start))
    console.log('Where the mesh realisation spends its time (median run)')
    line('closure listing (/fleetmesh/nix/1, one stream)', `${fmt(mid.closureMs, 0)} ms`)
    line('start → first NAR requested by Nix', `${fmt(firstStart - mid.t0, 0)} ms`)
    line('start → first NAR byte', `${fmt((mid.firstByte ?? Number.NaN) - mid.t0, 0)} ms`)
    line(
      `NAR downloads (${mid.fetches.length}), at most ${mid.maxConcurrent} at a time`,
      `${secs((lastEnd - firstStart) / 1000)} span, ${secs(fetchSum)} summed`,
    )
    line(
      '  per NAR download (mean, incl. stream open + fsync)',
      `${fmt((fetchSum / mid.fetches.length) * 1000, 1)} ms`,
    )
    line(
      'last NAR downloaded → realised (Nix import, cleanup)',
      `${fmt(mid.t0 + mid.seconds * 1000 - lastEnd, 0)} ms`,
    )

    // ---- the raw blob transfer, without Nix: one NAR after another, then eight at a time
    const cache = meshNixCache(host, coordinatorId)
    const nars = infos.map((i) => ({ sha256: sha256HexOfNixHash(i.narHash), size: i.narSize }))
    for (const [label, width] of [
      ['NAR blobs over the mesh, one at a time (no Nix)', 1],
      ['NAR blobs over the mesh, 8 at a time (no Nix)', 8],
    ] as const) {
      const into = await mkdtemp(join(dir, 'raw-'))
      const queue = [...nars]
      const s = await timed(() =>
        Promise.all(
          Array.from({ length: width }, async () => {
            for (let n = queue.shift(); n !== undefined; n = queue.shift()) {
              await cache.fetchNar(
                n.sha256,
                n.size,
                join(into, n.sha256),
                () => {},
                new AbortController().signal,
              )
            }
          }),
        ),
      )
      line(label, `${secs(s)}, ${rate(bytes, s)}`)
      out[`raw blobs x${width} s`] = s
      await rm(into, { recursive: true, force: true })
    }
  } finally {
    await http?.close()
    await host?.stop()
    await fleet.stop()
    // The closure is 100 MB of random bytes: leave nothing of it behind.
    await forget().catch((err: Error) => console.log(`  note: could not delete the closure: ${err.message}`))
  }
  return out
}
