/**
 * The admin requests that look at one machine through its control stream:
 * `ping` (round trips from the coordinator to the agent, and the path the
 * coordinator sees) and `doctor` (the agent's own diagnosis of its network).
 * Both are reads of that one machine, so the caller's certificate must cover
 * it. admin-rpc.ts authenticates, audits and answers; control.ts talks to the
 * agent.
 */
import type { Authority } from '../keys/index.ts'
import { sleep } from '../lib/index.ts'
import {
  type AdminOp,
  DIAGNOSE_TIMEOUT_MS,
  type DoctorResult,
  type PingResult,
  PROBE_TIMEOUT_MS,
} from '../protocol/index.ts'
import { AgentRequestError, type ControlService, type SessionInfo } from './control.ts'
import { requireCoveredMachine } from './machine-scope.ts'
import type { FleetStore } from './store.ts'

/** Between probes, so that they sample the path over a moment rather than one instant. */
const PROBE_INTERVAL_MS = 200

export type DiagnoseOp = Extract<AdminOp, { op: 'ping' | 'doctor' }>

export interface DiagnoseDeps {
  store: FleetStore
  control: ControlService
}

export async function runDiagnoseOp(
  deps: DiagnoseDeps,
  authority: Authority,
  body: DiagnoseOp,
): Promise<{ result: PingResult | DoctorResult; detail: string }> {
  const link = await connectedMachine(deps, authority, body.machine)
  const view = { machine: body.machine, ...link }
  if (body.op === 'doctor') {
    const diagnosis = await deps.control.diagnose(body.machine, DIAGNOSE_TIMEOUT_MS)
    return { result: { ...view, diagnosis } satisfies DoctorResult, detail: body.machine }
  }
  const probes: PingResult['probes'] = []
  for (let seq = 1; seq <= body.count; seq++) {
    if (seq > 1) await sleep(PROBE_INTERVAL_MS)
    try {
      const rtt = await deps.control.probe(body.machine, PROBE_TIMEOUT_MS)
      probes.push({ seq, rttMs: Math.round(rtt * 1000) / 1000 })
    } catch (err) {
      // A lost probe is a result, as in ping; a closed stream ends the request.
      if (!(err instanceof AgentRequestError && err.code === 'timeout')) throw err
      probes.push({ seq, rttMs: null })
    }
  }
  return { result: { ...view, probes } satisfies PingResult, detail: `${body.machine} x${body.count}` }
}

/** The machine's live connection, if it is enrolled, covered by the caller's certificate and connected. */
async function connectedMachine(
  { store, control }: DiagnoseDeps,
  authority: Authority,
  name: string,
): Promise<Pick<SessionInfo, 'path' | 'remoteAddr' | 'software'>> {
  const machine = await requireCoveredMachine(store, authority, name)
  const info = control.sessionInfo(name)
  if (info === undefined)
    throw new AgentRequestError(
      'offline',
      `${name} is offline: ${
        machine.lastSeen === null
          ? 'it has not connected since it enrolled'
          : `last seen ${new Date(machine.lastSeen).toISOString()}`
      }; it answers once its agent reconnects`,
    )
  return { path: info.path, remoteAddr: info.remoteAddr, software: info.software }
}
