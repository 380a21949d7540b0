/**
 * The dashboard from tests, the benchmark and the demo: `fleetmesh ui` as a
 * real child process, and Debian's chromium driven by playwright-core with a
 * fresh profile. Callers skip (saying why) when {@link CHROMIUM} is missing.
 */
import { existsSync } from 'node:fs'
import { type Browser, chromium } from 'playwright-core'
import { Proc } from './harness.ts'

export const CHROMIUM = '/usr/bin/chromium'

/** Why browser tests cannot run here, or undefined when they can. */
export const chromiumMissing: string | undefined = existsSync(CHROMIUM)
  ? undefined
  : `${CHROMIUM} is missing (Debian's chromium package; CI installs it)`

/** Headless chromium on a fresh temporary profile, with nothing that reaches the network by itself. */
export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
}

export interface RunningUi {
  proc: Proc
  /** The printed URL, token included */
  url: string
  /** http://127.0.0.1:<port> */
  origin: string
  token: string
}

/** Starts `fleetmesh --home <home> ui --json [extra]` and resolves with the URL it prints. */
export async function startUi(home: string, extra: string[] = []): Promise<RunningUi> {
  const proc = new Proc('fleetmesh ui', ['--home', home, 'ui', '--json', ...extra])
  const listening = await proc.waitFor((e) => e.event === 'listening', 30_000, 'the dashboard URL')
  const url = new URL(String(listening.url))
  return { proc, url: url.href, origin: url.origin, token: url.searchParams.get('token') ?? '' }
}
