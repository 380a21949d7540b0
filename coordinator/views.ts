/** Builds the per-machine view admins see from the stored records. */
import type { MachineView } from '../protocol/index.ts'
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
    reportedAt: r?.timestamp ?? null,
  }
}
