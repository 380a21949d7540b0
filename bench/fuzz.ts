/**
 * `npm run bench -- fuzz [--frames 1000000] [--minutes N] [--peers 8] [--streams 6] [--honest-every 15] [--json]`:
 * fuzzes the admin, enroll, control and blob protocols of a real coordinator
 * (a child process, coordinator-child.ts) from unauthenticated peers
 * (fuzz-peer.ts; frames from fuzz-frames.ts), while an honest agent process
 * keeps receiving deploys (fuzz-honest.ts). Not in the default bench run: both
 * processes spend ~0.7-0.9 ms of CPU per frame, so the default million frames
 * take 15 minutes or more on two cores; `--minutes` stops it earlier.
 *
 * Reports frames sent by protocol and kind, frames/s, the coordinator's
 * crashes (an exit nobody asked for; it is restarted, the frames just before
 * are written to a file), its peak and final resident memory, the store's and
 * the audit log's growth, the honest deploys and whether `fleetmesh audit
 * --verify` still passes. Fails (exit code 1) on a crash, a failed honest
 * deploy or a failed verification.
 */
import { writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { multiaddr } from '@multiformats/multiaddr'
import { loadAdminHome } from '../admin/home.ts'
import { sleep } from '../lib/index.ts'
import { TestFleet } from '../testkit/harness.ts'
import { type ChildExit, CoordinatorChild } from './coordinator-child.ts'
import { type HonestDeploy, HonestPath } from './fuzz-honest.ts'
import { FrameBudget, FuzzTally, runPeer } from './fuzz-peer.ts'
import { type Crash, type FuzzReport, printReport } from './fuzz-report.ts'
import { SeedPool } from './fuzz-seeds.ts'
import { auditSince, storeSize } from './fuzz-store.ts'
import { fmt, percentile } from './measure.ts'

export interface FuzzOptions {
  frames: number
  /** Fuzzing peers at once, each with its own connection */
  peers: number
  /** Concurrent streams per peer */
  streams: number
  honestEverySeconds: number
  /** Stop the fuzzing after this many minutes even if frames are left (and report how far it got) */
  minutes?: number
  json: boolean
}

const MACHINE = 'honest'
/** The forced-GC snapshot after the fuzzing is taken at least this long after it ended. */
const SETTLE_MS = 15_000
const PROGRESS_MS = 60_000
const MB = 2 ** 20

export async function benchFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const say = o.json ? (s: string) => console.error(s) : (s: string) => console.log(s)
  const fleet = await TestFleet.create()
  const listen = `/ip4/127.0.0.1/tcp/${fleet.port}`
  let coordinator = await CoordinatorChild.start(fleet.coordState, listen, false)
  const tally = new FuzzTally()
  const crashes: Crash[] = []
  let peakRss = 0
  let done = false
  try {
    const token = await fleet.token(MACHINE)
    const agent = fleet.startAgent(MACHINE, ['--token', token])
    await agent.waitFor((e) => e.event === 'connected', 30_000, `${MACHINE} connected`)
    const honest = new HonestPath(fleet, MACHINE)
    const baseline = await honest.deploy(false)
    if (!baseline.ok) throw new Error(`the honest deploy fails before any fuzzing: ${baseline.problem}`)

    const home = await loadAdminHome(fleet.home)
    const pool = new SeedPool({
      fleetId: home.fleet.fleetId,
      fleetRoot: home.fleetRoot,
      coordinator: home.fleet.coordinator,
      usedToken: token,
      machine: MACHINE,
      blobSha256: baseline.sha256,
    })
    const before = await storeSize(fleet.storePath)
    const rssBefore = (await coordinator.resident()).rss
    const gcBefore = await coordinator.snapshot()
    say(
      `  coordinator pid ${coordinator.pid}, RSS ${fmt(rssBefore / MB)} MB; honest baseline deploy ${fmt(baseline.ms)} ms; ` +
        `fuzzing with ${o.peers} peers × ${o.streams} streams` +
        (o.minutes === undefined ? '' : `, for at most ${o.minutes} min`),
    )

    const stop = new AbortController()
    const restart = async (): Promise<CoordinatorChild> => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await CoordinatorChild.start(fleet.coordState, listen, false)
        } catch (err) {
          if (attempt === 5) throw err
          say(`  !! coordinator restart ${attempt} failed: ${(err as Error).message}`)
        }
      }
    }
    // A crash is an exit nobody asked for: keep what preceded it, restart, go on.
    const watchCrashes = async () => {
      while (true) {
        const exit: ChildExit = await coordinator.exited
        if (exit.stopped) return
        const file = join(tmpdir(), `fleetmesh-fuzz-crash-${crashes.length + 1}-${exit.at}.json`)
        await writeFile(file, JSON.stringify({ exit, recent: tally.recent }, null, 1))
        crashes.push({
          at: new Date(exit.at).toISOString(),
          code: exit.code,
          signal: exit.signal,
          stderr: exit.stderr.slice(-40),
          file,
        })
        say(
          `  !! coordinator exited (${exit.code ?? exit.signal}); last frames in ${file}; restarting\n${exit.stderr.slice(-15).join('\n')}`,
        )
        if (done) return
        coordinator = await restart()
      }
    }
    let restartFailed: Error | undefined
    const crashWatch = watchCrashes().catch((err: Error) => {
      // no coordinator to fuzz any more: end the run and say why
      restartFailed = err
      stop.abort()
    })
    const sampler = setInterval(() => {
      coordinator.resident().then(
        (m) => {
          peakRss = Math.max(peakRss, m.rss, m.peak)
        },
        () => {},
      )
    }, 250)

    const honestDuring: HonestDeploy[] = []
    const honestRun = honest.run(o.honestEverySeconds * 1000, stop.signal, (r) => {
      honestDuring.push(r)
      if (!r.ok) say(`  !! honest deploy ${r.generation} failed: ${r.problem}`)
    })
    const budget = new FrameBudget(o.frames)
    const target = multiaddr(`${listen}/p2p/${coordinator.peerId}`)
    const started = Date.now()
    const cpuBefore = { coordinator: await coordinator.cpuSeconds(), fuzzer: process.cpuUsage() }
    const deadline = o.minutes === undefined ? undefined : setTimeout(() => stop.abort(), o.minutes * 60_000)
    // every tenth of the frames, and at least every minute
    let mark = 1
    let lastSaid = started
    const progress = setInterval(() => {
      const tenth = budget.sent >= (o.frames * mark) / 10
      if (!tenth && Date.now() - lastSaid < PROGRESS_MS) return
      while (budget.sent >= (o.frames * mark) / 10) mark++
      lastSaid = Date.now()
      const s = (lastSaid - started) / 1000
      const ok = honestDuring.filter((r) => r.ok).length
      say(
        `  ${fmt((budget.sent / o.frames) * 100).padStart(3)}%  ${fmt(budget.sent)} frames in ${fmt(s)} s (${fmt(budget.sent / s)}/s); ` +
          `RSS peak ${fmt(peakRss / MB)} MB; honest ${ok}/${honestDuring.length} ok; crashes ${crashes.length}`,
      )
    }, 500)
    await Promise.all(
      Array.from({ length: o.peers }, () =>
        runPeer({ target, pool, budget, tally, streams: o.streams, signal: stop.signal }),
      ),
    )
    const seconds = (Date.now() - started) / 1000
    clearTimeout(deadline)
    const timedOut = budget.sent < o.frames
    const fuzzerCpu = process.cpuUsage(cpuBefore.fuzzer)
    const cpuSeconds = {
      // a restarted coordinator's clock starts again: then this counts only the last one
      coordinator: (await coordinator.cpuSeconds()) - (crashes.length > 0 ? 0 : cpuBefore.coordinator),
      fuzzer: (fuzzerCpu.user + fuzzerCpu.system) / 1e6,
    }
    clearInterval(progress)
    stop.abort()
    await honestRun
    if (restartFailed !== undefined) throw restartFailed
    // and one more once the attack is over
    const after = await honest.deploy(false)
    clearInterval(sampler)
    const resident = await coordinator.resident()
    peakRss = Math.max(peakRss, resident.peak)
    // what the coordinator still holds once the attackers are long gone (as bench/flood.ts shows it)
    await sleep(Math.max(0, started + seconds * 1000 + SETTLE_MS - Date.now()))
    const gcAfter = await coordinator.snapshot()
    const frameErrors = await coordinator.frameErrors()
    const verify = await fleet.cli(['audit', '--verify'])
    const verified = verify.code === 0 && verify.stdout.includes('hash chain intact')
    const reconnects = agent.events.filter((e) => e.event === 'connected').length - 1
    done = true
    await coordinator.stop()
    await crashWatch
    const end = await storeSize(fleet.storePath)
    const audit = auditSince(fleet.storePath, before.lastAuditIndex)

    const all = [...honestDuring, after]
    const latencies = all.map((r) => r.ms).sort((a, b) => a - b)
    const failed = all.filter((r) => !r.ok)
    const report: FuzzReport = {
      frames: {
        total: budget.sent,
        planned: o.frames,
        stoppedAtTimeLimit: timedOut,
        seconds,
        perSecond: budget.sent / seconds,
        streams: tally.streamCount,
        cpuSeconds,
        byProtocol: tally.frames,
      },
      streams: tally.streams,
      answers: tally.answers,
      openErrors: tally.openErrors,
      peers: {
        identities: tally.identities,
        dialFailures: tally.dialFailures,
        connectionsLost: tally.connectionsLost,
      },
      coordinator: {
        crashes,
        frameErrors,
        rssBytes: { before: rssBefore, peak: peakRss, final: resident.rss },
        afterGc: { before: gcBefore, after: gcAfter },
      },
      store: {
        logicalBytes: { before: before.logicalBytes, after: end.logicalBytes },
        fileBytesAfter: end.fileBytes,
        audit,
      },
      honest: {
        baselineMs: baseline.ms,
        ok: all.length - failed.length,
        total: all.length,
        p50Ms: percentile(latencies, 50),
        maxMs: latencies.at(-1) ?? Number.NaN,
        failed,
        agentReconnects: reconnects,
      },
      auditVerify: verified
        ? { ok: true }
        : { ok: false, output: `${verify.stdout}\n${verify.stderr}`.trim() },
      pass: crashes.length === 0 && failed.length === 0 && verified,
    }
    if (o.json) console.log(JSON.stringify(report, null, 2))
    else printReport(report)
    if (!report.pass) process.exitCode = 1
    return report
  } finally {
    done = true
    if (coordinator.child.exitCode === null && coordinator.child.signalCode === null) await coordinator.stop()
    await fleet.stop()
  }
}
