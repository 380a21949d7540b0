/**
 * The agent's answer to `fleetmesh doctor <machine>`: its runtime snapshot (the
 * one runtime.json holds, built fresh), its interfaces and the coordinator
 * addresses it dials. Quick and without secrets: no NAT probe (hole punching's
 * last observation is in the snapshot's details), no keys, tokens or
 * environment. Cut to fit MAX_DIAGNOSIS_BYTES: connections first (the
 * coordinator's kept longest), then the details.
 */
import { localInterfaces, type RuntimeSnapshot } from '../net/index.ts'
import {
  type AgentDiagnosis,
  agentDiagnosisSchema,
  encodeMessage,
  MAX_DIAGNOSIS_BYTES,
} from '../protocol/index.ts'
import { SOFTWARE } from './link.ts'

export interface DiagnosisInit {
  machine: string
  snapshot: RuntimeSnapshot
  coordinator: { peerId: string; addrs: readonly string[] }
  /** Defaults to this machine's interfaces. */
  interfaces?: { name: string; address: string }[]
  maxBytes?: number
}

/** The wire schema's bound on one address; a longer one is left out rather than cut into a wrong one. */
const MAX_ADDR = 1024
const fits = (addr: string): boolean => addr.length <= MAX_ADDR

export function agentDiagnosis(init: DiagnosisInit): AgentDiagnosis {
  const { snapshot: s, coordinator } = init
  const maxBytes = init.maxBytes ?? MAX_DIAGNOSIS_BYTES
  const connections = s.connections
    .filter((c) => fits(c.remoteAddr))
    .sort((a, b) => Number(b.peer === coordinator.peerId) - Number(a.peer === coordinator.peerId))
    .slice(0, 256)
  const diagnosis: AgentDiagnosis = {
    machine: init.machine,
    software: SOFTWARE,
    snapshot: {
      role: s.role,
      pid: s.pid,
      peerId: s.peerId,
      at: s.at,
      listen: s.listen.filter(fits).slice(0, 64),
      advertised: s.advertised.filter(fits).slice(0, 64),
      connections,
      // Plain JSON: what the snapshot's details hold for runtime.json, minus undefined fields.
      details: JSON.parse(JSON.stringify(s.details)) as AgentDiagnosis['snapshot']['details'],
    },
    interfaces: (init.interfaces ?? localInterfaces()).slice(0, 64),
    coordinator: { peerId: coordinator.peerId, addrs: coordinator.addrs.filter(fits).slice(0, 16) },
    // The wire schema's caps count as leaving things out too.
    truncated: connections.length < s.connections.length,
  }
  while (encodeMessage(agentDiagnosisSchema, diagnosis).byteLength > maxBytes) {
    const shown = diagnosis.snapshot
    if (shown.connections.length > 0)
      shown.connections = shown.connections.slice(0, shown.connections.length >> 1)
    else if (Object.keys(shown.details).length > 0) shown.details = {}
    else break
    diagnosis.truncated = true
  }
  return diagnosis
}
