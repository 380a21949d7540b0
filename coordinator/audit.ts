/**
 * The coordinator's side of the audit log: signing each record's hash. Hashing
 * and verification live in protocol/audit-log.ts, shared with the admin CLI,
 * which verifies exported logs offline.
 */
import { DOMAINS, type PrivateKey } from '../keys/index.ts'
import type { AuditSigner } from './store.ts'

/** The signer FleetStore.appendAudit takes, bound to the coordinator's key. */
export function signAuditHash(coordinatorKey: PrivateKey): AuditSigner {
  return (hash) => coordinatorKey.sign(DOMAINS.audit, hash)
}
