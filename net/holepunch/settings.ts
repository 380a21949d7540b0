/**
 * The hole-punching service's configuration: {@link HolePunchInit} with the
 * defaults filled in and every number checked, so a bad option fails when the
 * host is built, with the option's name and range, not mid-punch.
 */
import type { HolePunchInit } from './api.ts'
import { type Endpoint, parseEndpoint } from './nat.ts'

/** One SYN per attempt: stay below the kernel's 1 s initial retransmission timeout */
export const MAX_ATTEMPT_TIMEOUT_MS = 950

type Tunables = Required<
  Omit<HolePunchInit, 'punchPort' | 'localAddress' | 'observers' | 'shouldPunch' | 'allowLanDials'>
>

/** The service's options, checked and complete */
export interface HolePunchSettings extends Tunables {
  observers: Endpoint[]
  localAddress: string | undefined
  /** 0 until the service picks a free port at start */
  punchPort: number
  shouldPunch: HolePunchInit['shouldPunch']
  allowLanDials: HolePunchInit['allowLanDials']
}

const DEFAULTS: Tunables = {
  enabled: true,
  autoPunch: true,
  closeRelayed: true,
  attemptTimeoutMs: 300,
  deadlineMs: 5_000,
  observeTimeoutMs: 3_000,
  reprobeIntervalMs: 30_000,
  exchangeTimeoutMs: 10_000,
  upgradeTimeoutMs: 10_000,
  backoffMs: 60_000,
  maxBackoffMs: 3_600_000,
}

function checkMs(name: string, value: number, min: number, max: number): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new RangeError(
      `holePunch ${name} must be a whole number of ms between ${min} and ${max}, got ${value}`,
    )
  }
  return value
}

/** @throws {RangeError} an option is out of range (the message names it) */
export function holePunchSettings(init: HolePunchInit): HolePunchSettings {
  // undefined means "default" here, as callers pass optional flags straight through
  const { shouldPunch, allowLanDials, ...rest } = init
  const given: Partial<HolePunchInit> = Object.fromEntries(
    Object.entries(rest).filter(([, v]) => v !== undefined),
  )
  const merged: Tunables = { ...DEFAULTS, ...given }
  const tunables: Tunables = {
    ...merged,
    attemptTimeoutMs: checkMs('attemptTimeoutMs', merged.attemptTimeoutMs, 50, MAX_ATTEMPT_TIMEOUT_MS),
    deadlineMs: checkMs('deadlineMs', merged.deadlineMs, 100, 60_000),
    observeTimeoutMs: checkMs('observeTimeoutMs', merged.observeTimeoutMs, 50, 60_000),
    reprobeIntervalMs: checkMs('reprobeIntervalMs', merged.reprobeIntervalMs, 1_000, 3_600_000),
    exchangeTimeoutMs: checkMs('exchangeTimeoutMs', merged.exchangeTimeoutMs, 100, 60_000),
    upgradeTimeoutMs: checkMs('upgradeTimeoutMs', merged.upgradeTimeoutMs, 100, 120_000),
    backoffMs: checkMs('backoffMs', merged.backoffMs, 0, 2 ** 31 - 1),
    maxBackoffMs: checkMs('maxBackoffMs', merged.maxBackoffMs, 0, 2 ** 31 - 1),
  }
  const observers = (init.observers ?? []).map(parseEndpoint)
  if (
    init.punchPort !== undefined &&
    (!Number.isInteger(init.punchPort) || init.punchPort < 1 || init.punchPort > 65_535)
  ) {
    throw new RangeError(`holePunch punchPort must be a TCP port (1-65535), got ${init.punchPort}`)
  }
  return {
    ...tunables,
    observers,
    localAddress: init.localAddress,
    punchPort: init.punchPort ?? 0,
    shouldPunch,
    allowLanDials,
  }
}
