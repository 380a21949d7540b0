/**
 * A verify-pool worker thread (verify-pool.ts): opens batches of signed status
 * report envelopes with the same `openEnvelope` the coordinator used inline, and
 * answers with the decoded report and its signer, or with the error's name, code
 * and message so the main thread refuses the report exactly as before.
 */
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

parentPort?.on('message', (request: VerifyRequest) => {
  parentPort?.postMessage({ id: request.id, results: request.envelopes.map(open) })
})
