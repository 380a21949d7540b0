/**
 * `npm run bench`: runs every benchmark and prints figures with units and the
 * ratio to the reference each names. `npm run bench -- crypto` runs one section;
 * `--seconds N` sets the measuring window per figure. The NAT and fuzz sections
 * run only when named (`npm run bench -- fuzz --frames 20000`; `--json` prints
 * the fuzz figures as JSON on stdout and everything else on stderr).
 */
import { benchBlob } from './blob.ts'
import { benchCluster } from './cluster.ts'
import { benchClusterThroughput } from './cluster-throughput.ts'
import { benchCrypto } from './crypto.ts'
import { benchFleet } from './fleet.ts'
import { benchFuzz } from './fuzz.ts'
import { benchNat } from './nat.ts'
import { benchNix } from './nix.ts'
import { benchQuic } from './quic.ts'
import { benchRollout } from './rollout.ts'
import { benchUi } from './ui.ts'

const args = process.argv.slice(2)
const secondsArg = args.indexOf('--seconds')
const seconds = secondsArg >= 0 ? Number(args[secondsArg + 1]) : 2
if (!Number.isFinite(seconds) || seconds <= 0) {
  console.error('--seconds needs a positive number')
  process.exit(2)
}
const VALUE_FLAGS = new Set([
  '--seconds',
  '--agents',
  '--failover-agents',
  '--agent-procs',
  '--rounds',
  '--reports',
  '--trials',
  '--runs',
  '--frames',
  '--peers',
  '--streams',
  '--honest-every',
  '--minutes',
  '--machines',
  '--mib',
  '--dials',
])
const json = args.includes('--json')
const only = args.filter((a, i) => !a.startsWith('--') && !VALUE_FLAGS.has(args[i - 1] ?? ''))

function numberArg(flag: string, fallback: number): number {
  const i = args.indexOf(flag)
  if (i < 0) return fallback
  const n = Number(args[i + 1])
  if (!Number.isInteger(n) || n < 1) {
    console.error(`${flag} needs a positive whole number`)
    process.exit(2)
  }
  return n
}

const sections: Record<string, () => Promise<unknown> | unknown> = {
  crypto: () => benchCrypto(seconds),
  nat: () => benchNat(numberArg('--trials', 20)),
  fleet: () =>
    benchFleet(
      numberArg('--agents', 200),
      numberArg('--rounds', 10),
      numberArg('--reports', 50),
      numberArg('--agent-procs', 4),
    ),
  cluster: async () => ({
    ...(await benchClusterThroughput(
      numberArg('--agents', 200),
      numberArg('--rounds', 10),
      numberArg('--reports', 50),
    )),
    ...(await benchCluster(numberArg('--failover-agents', 500), numberArg('--agent-procs', 4))),
    ...(await benchCluster(numberArg('--failover-agents', 500), numberArg('--agent-procs', 4), false)),
  }),
  nix: () => benchNix(numberArg('--runs', 3)),
  rollout: () => benchRollout(numberArg('--machines', 1000)),
  ui: () => benchUi(numberArg('--machines', 1000)),
  blob: () => benchBlob(numberArg('--mib', 200), numberArg('--runs', 3)),
  quic: () =>
    benchQuic(
      numberArg('--dials', 100),
      numberArg('--mib', 100),
      numberArg('--runs', 3),
      numberArg('--agents', 100),
    ),
  fuzz: () =>
    benchFuzz({
      frames: numberArg('--frames', 1_000_000),
      peers: numberArg('--peers', 8),
      streams: numberArg('--streams', 6),
      honestEverySeconds: numberArg('--honest-every', 15),
      ...(args.includes('--minutes') ? { minutes: numberArg('--minutes', 15) } : {}),
      json,
    }),
}
/** Run only when named: they need root and take minutes (nat), or attack a coordinator for ~10 minutes (fuzz). */
const ON_REQUEST = new Set(['nat', 'fuzz'])
const say = json ? console.error : console.log

const unknown = only.filter((s) => !(s in sections))
if (unknown.length > 0) {
  console.error(`unknown bench section(s): ${unknown.join(', ')}; known: ${Object.keys(sections).join(', ')}`)
  process.exit(2)
}
say(`fleetmesh bench on Node ${process.versions.node}, ${(await import('node:os')).cpus().length} CPUs`)
for (const [name, run] of Object.entries(sections)) {
  if (only.length > 0 ? !only.includes(name) : ON_REQUEST.has(name)) continue
  say(`\n== ${name}`)
  await run()
}
