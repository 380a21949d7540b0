/**
 * Child process for the crash-durability test in store.test.ts:
 *
 *   node store-crash-child.ts <db path> <machine>
 *
 * Records signed status reports seq 1, 2, 3, … for <machine> (already enrolled)
 * until killed, printing each seq on its own line right after recordStatus
 * resolves, i.e. at the moment the coordinator would acknowledge it. stdout is a
 * pipe, which Node writes synchronously on Linux, so a printed line was handed
 * to the parent before the next report begins.
 */
import { openSqliteStore } from '../../coordinator/sqlite-store.ts'
import { DOMAINS } from '../../keys/domains.ts'
import { PrivateKey } from '../../keys/identity.ts'
import { sealEnvelope } from '../../protocol/envelope.ts'
import { type StatusReport, statusReportSchema } from '../../protocol/messages.ts'

const [dbPath, machine] = process.argv.slice(2)
if (dbPath === undefined || machine === undefined) {
  process.stderr.write('usage: store-crash-child.ts <db path> <machine>\n')
  process.exit(2)
}

const store = await openSqliteStore(dbPath)
const key = PrivateKey.generate()
for (let seq = 1; ; seq++) {
  const report: StatusReport = {
    v: 1,
    machine,
    seq,
    state: 'downloading',
    currentGeneration: 'gen-1',
    desiredGeneration: 'gen-2',
    manifestId: null,
    manifestSequence: null,
    rolloutId: null,
    progress: { done: seq, total: seq + 1 },
    error: null,
    facts: {},
    timestamp: Date.now(),
  }
  const envelope = sealEnvelope(statusReportSchema, DOMAINS.status, report, key)
  const result = await store.recordStatus({ machine, seq, report, envelope, receivedAt: Date.now() })
  if (result !== 'stored') throw new Error(`seq ${seq} was ${result}, expected stored`)
  process.stdout.write(`${seq}\n`)
}
