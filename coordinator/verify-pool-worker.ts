/**
 * A verify-pool worker thread (verify-pool.ts): opens batches of signed status
 * report envelopes with the same `openEnvelope` the coordinator used inline, and
 * answers with the decoded report and its signer, or with the error's name, code
 * and message so the main thread refuses the report exactly as before.
 */
import { readlinkSync } from 'node:fs'
import { getPriority, setPriority } from 'node:os'
import { parentPort } from 'node:worker_threads'
import { DOMAINS } from '../keys/index.ts'
import { openEnvelope, statusReportSchema } from '../protocol/index.ts'
import type { VerifyRequest, VerifyResult } from './verify-pool.ts'

function open(envelope: Uint8Array): VerifyResult {
  try {
    const opened = openEnvelope(statusReportSchema, DOMAINS.status, envelope)
    return { ok: true, value: opened.value, signer: opened.signer.bytes }
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err))
    const code = (e as { code?: unknown }).code
    return { ok: false, name: e.name, message: e.message, ...(typeof code === 'string' ? { code } : {}) }
  }
}

/**
 * This thread's nice value. The main thread reads every connection, answers
 * pings and sends acks; under a burst of reports the verifiers would take the
 * cores from it (two busy verifiers and the main thread on two cores left it
 * waiting for a CPU for hundreds of ms, and a ping with it). Niced, they verify
 * with whatever CPU the main thread leaves.
 */
const VERIFIER_NICE = 10

// Linux: /proc/thread-self names this thread's id, and setpriority() takes a thread id
// (a higher nice value needs no privilege). Elsewhere the thread keeps its priority.
try {
  const tid = Number(readlinkSync('/proc/thread-self').split('/').pop())
  // never less nice than the process already is (that would need privilege, and is not the point)
  setPriority(tid, Math.max(getPriority(tid), VERIFIER_NICE))
} catch {
  // not Linux, or no /proc: nothing to do
}

parentPort?.on('message', (request: VerifyRequest) => {
  parentPort?.postMessage({ id: request.id, results: request.envelopes.map(open) })
})
