/**
 * A second admin of a TestFleet, with its own home and a certificate the
 * fleet's first admin grants it (`admin keygen` / `grant` / `install`, as an
 * operator would), for the scope and revocation tests.
 */
import { join } from 'node:path'
import { type CliResult, Proc, runCli, type TestFleet } from '../../testkit/harness.ts'

export interface ScopedAdmin {
  home: string
  serial: string
  /** Runs `fleetmesh --home <its home> <args>`; any exit code resolves. */
  cli(...args: string[]): Promise<CliResult>
  /** Starts a long-running `fleetmesh --home <its home> <args>` (killed by fleet.stop()). */
  start(args: string[]): Proc
}

/**
 * `grant`: e.g. ['--caps', 'read', '--tags', 'lab'] or ['--caps', 'deploy', '--all', '--valid', '15s'];
 * granted by the fleet's first admin (the root key), or by `issuer` (delegation).
 */
export async function grantAdmin(
  fleet: TestFleet,
  name: string,
  grant: string[],
  issuer?: ScopedAdmin,
): Promise<ScopedAdmin> {
  const home = join(fleet.dir, `admin-${name}`)
  const keygen = await runCli(['--home', home, 'admin', 'keygen', '--json'])
  if (keygen.code !== 0) throw new Error(`admin keygen failed: ${keygen.stderr}`)
  const { publicKey } = JSON.parse(keygen.stdout) as { publicKey: string }
  const args = ['admin', 'grant', '--subject', publicKey, '--name', name, ...grant, '--json']
  const granted = await (issuer === undefined ? fleet.cli(args) : issuer.cli(...args))
  if (granted.code !== 0) throw new Error(`admin grant failed: ${granted.stderr}`)
  const issued = JSON.parse(granted.stdout) as { bundle: string; serial: string }
  const install = await runCli(['--home', home, 'admin', 'install', issued.bundle])
  if (install.code !== 0) throw new Error(`admin install failed: ${install.stderr}`)
  return {
    home,
    serial: issued.serial,
    cli: (...args) => runCli(['--home', home, ...args]),
    start: (args) => {
      const p = new Proc(`${name}: ${args.join(' ')}`, ['--home', home, ...args])
      fleet.procs.push(p)
      return p
    },
  }
}
