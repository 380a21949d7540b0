// A fleet root, admins with and without the `admin` capability, and a helper that
// signs the next entry of a revocation list: shared by the revocation tests.
import { issueCertificate, PrivateKey, type Scope, type SignedCertificate } from '../../keys/index.ts'
import {
  type RevocationEntry,
  type RevocationHead,
  type RevocationPolicy,
  sealRevocation,
} from '../../protocol/index.ts'
import { hex } from '../../testkit/fixtures.ts'

export const HOUR = 3_600_000

export interface Signer {
  key: PrivateKey
  chain: SignedCertificate[]
  serial: string
}

export interface RevocationFleet {
  root: PrivateKey
  policy: RevocationPolicy
  /** An admin of the whole fleet with the `admin` capability, certified by the root. */
  admin: Signer
  /** A certificate from the root for a new key. */
  signer(options?: {
    caps?: ('deploy' | 'admin' | 'read' | 'enroll')[]
    scope?: Scope
    notAfter?: number
  }): Signer
  /** The signed entry after `head`, revoking `serial`. */
  entry(
    head: RevocationHead,
    serial: string,
    options?: { by?: Signer; at?: number; fleetId?: string },
  ): Uint8Array
}

export function revocationFleet(fleetId = 'acme'): RevocationFleet {
  const root = PrivateKey.generate()
  const signer: RevocationFleet['signer'] = (options = {}) => {
    const key = PrivateKey.generate()
    const serial = hex(16)
    const chain = [
      issueCertificate(root, {
        subject: key.publicKey,
        name: `admin-${serial.slice(0, 6)}`,
        capabilities: options.caps ?? ['admin', 'deploy', 'read'],
        scope: options.scope ?? { all: true },
        notBefore: Date.now() - HOUR,
        notAfter: options.notAfter ?? Date.now() + 24 * HOUR,
        serial,
      }),
    ]
    return { key, chain, serial }
  }
  const admin = signer()
  return {
    root,
    policy: { fleetRoot: root.publicKey, fleetId },
    admin,
    signer,
    entry(head, serial, options = {}) {
      const by = options.by ?? admin
      const entry: RevocationEntry = {
        v: 1,
        fleetId: options.fleetId ?? fleetId,
        seq: head.seq + 1,
        prev: head.hash,
        serial,
        reason: 'test',
        at: options.at ?? Date.now(),
      }
      return sealRevocation(entry, by.key, by.chain)
    },
  }
}
