/** Builds the per-machine views admins see from the stored records. */
import type { MachineHistoryEntry, MachineLog, MachineView } from '../protocol/index.ts'
import type { MachineRecord, ManifestRecord, StatusRecord } from './store.ts'

export function machineView(
  m: MachineRecord,
  status: StatusRecord | undefined,
  desired: ManifestRecord | undefined,
  online: boolean,
): MachineView {
  const r = status?.report
  return {
    name: m.name,
    peerId: m.peerId,
    tags: m.tags,
    online,
    path: m.path,
    transport: m.transport,
    enrolledAt: m.enrolledAt,
    lastSeen: m.lastSeen,
    state: r?.state ?? null,
    currentGeneration: r?.currentGeneration ?? null,
    desiredGeneration: desired?.generation ?? null,
    manifestId: r?.manifestId ?? null,
    rolloutId: r?.rolloutId ?? null,
    desiredManifestId: desired?.id ?? null,
    desiredRolloutId: desired?.rolloutId ?? null,
    progress: r?.progress ?? null,
    error: r?.error ?? null,
    rebootRequired: r?.rebootRequired === true,
    reportedAt: r?.timestamp ?? null,
    agentVersion: m.agentVersion,
  }
}

/** A machine's update log from the report `latestLogReport` chose (none: all null). */
export function machineLogView(machine: string, status: StatusRecord | undefined): MachineLog {
  const r = status?.report
  return {
    machine,
    state: r?.state ?? null,
    manifestId: r?.manifestId ?? null,
    // the generation the logged update was installing, or the running one when none was
    generation: r === undefined ? null : (r.desiredGeneration ?? r.currentGeneration),
    error: r?.error ?? null,
    log: r?.log ?? null,
    rebootRequired: r?.rebootRequired ?? false,
    reportedAt: r?.timestamp ?? null,
  }
}

/** A machine's reports, newest first, as its update history: the logs stay out (machine-log has the last). */
export function machineHistoryView(reports: readonly StatusRecord[]): MachineHistoryEntry[] {
  return reports.map(({ report: r, receivedAt }) => ({
    seq: r.seq,
    state: r.state,
    currentGeneration: r.currentGeneration,
    desiredGeneration: r.desiredGeneration,
    rolloutId: r.rolloutId,
    progress: r.progress,
    error: r.error,
    reportedAt: r.timestamp,
    receivedAt,
  }))
}
