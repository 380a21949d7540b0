/**
 * `npm run bench`: runs every benchmark and prints figures with units and the
 * ratio to the reference each names. `npm run bench -- crypto` runs one section;
 * `--seconds N` sets the measuring window per figure.
 */
import { benchCrypto } from './crypto.ts'
import { benchFleet } from './fleet.ts'
import { benchNat } from './nat.ts'
import { benchNix } from './nix.ts'

const args = process.argv.slice(2)
const secondsArg = args.indexOf('--seconds')
const seconds = secondsArg >= 0 ? Number(args[secondsArg + 1]) : 2
if (!Number.isFinite(seconds) || seconds <= 0) {
  console.error('--seconds needs a positive number')
  process.exit(2)
}
const VALUE_FLAGS = new Set(['--seconds', '--agents', '--rounds', '--reports', '--trials', '--runs'])
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
  fleet: () => benchFleet(numberArg('--agents', 200), numberArg('--rounds', 10), numberArg('--reports', 50)),
  nix: () => benchNix(numberArg('--runs', 3)),
}

const unknown = only.filter((s) => !(s in sections))
if (unknown.length > 0) {
  console.error(`unknown bench section(s): ${unknown.join(', ')}; known: ${Object.keys(sections).join(', ')}`)
  process.exit(2)
}
console.log(
  `fleetmesh bench on Node ${process.versions.node}, ${(await import('node:os')).cpus().length} CPUs`,
)
for (const [name, run] of Object.entries(sections)) {
  // The NAT figures need root and take minutes; they have their own script (bench:nat).
  if (only.length > 0 ? !only.includes(name) : name === 'nat') continue
  console.log(`\n== ${name}`)
  await run()
}
