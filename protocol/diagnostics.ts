/**
 * Results of the admin requests that look at one machine's connection:
 * `ping` (round trips from the coordinator over the machine's control stream)
 * and `doctor` (the diagnosis the agent sent up that stream, messages.ts's
 * agentDiagnosisSchema). Both also say how the coordinator sees the connection.
 */
import { z } from 'zod'
import { machineName } from '../keys/index.ts'
import { agentDiagnosisSchema, connectionPathSchema, MAX_PING_COUNT } from './messages.ts'

/** How long the coordinator waits for one probe's reply. */
export const PROBE_TIMEOUT_MS = 2000
/** How long the coordinator waits for an agent's diagnosis. */
export const DIAGNOSE_TIMEOUT_MS = 10_000

/** How the coordinator sees a machine's control connection. */
const controlLinkView = {
  machine: machineName,
  path: connectionPathSchema,
  /** The agent's address as the coordinator's end of the connection sees it. */
  remoteAddr: z.string().max(1024),
  /** What the agent's hello said it runs. */
  software: z.string().max(256),
}

export const pingResult = z.strictObject({
  ...controlLinkView,
  /** One per probe, in order; a null round trip is a probe that got no reply within PROBE_TIMEOUT_MS. */
  probes: z
    .array(
      z.strictObject({
        seq: z.number().int().min(1).max(MAX_PING_COUNT),
        rttMs: z.number().nonnegative().max(PROBE_TIMEOUT_MS).nullable(),
      }),
    )
    .max(MAX_PING_COUNT),
})
export type PingResult = z.infer<typeof pingResult>

export const doctorResult = z.strictObject({ ...controlLinkView, diagnosis: agentDiagnosisSchema })
export type DoctorResult = z.infer<typeof doctorResult>
