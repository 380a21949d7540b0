/**
 * Certificate links already decoded and verified, remembered by their signed
 * bytes (body and signature), so a link shown again is neither decoded nor
 * verified again. An agent is shown its admin's certificate chain with every
 * manifest; with a memo, each link costs a CBOR decode, a schema check and
 * one Ed25519 verify (~240 µs here) the first time, and a lookup after.
 *
 * Only links whose signature verified are kept, and a link differing in any
 * byte is another entry, so the memo cannot make a link pass that would fail.
 * What can change with time (revocation, expiry, capabilities asked for) is
 * checked by verifyChain on every use. Bounded: the oldest entry goes first.
 *
 * @example
 *
 * ```ts
 * const memo = new CertificateMemo()
 * verifyChain(chain, { root, signer, capability: 'deploy', memo })
 * ```
 */
import { bytesKey } from '../lib/index.ts'
import type { Certificate, SignedCertificate } from './certificate.ts'

// A signature has a fixed length (a shorter one fails to verify and is never kept), so the parts cannot run together.
const idOf = (signed: SignedCertificate) => bytesKey(signed.sig) + bytesKey(signed.body)

export class CertificateMemo {
  readonly #verified = new Map<string, Certificate>()
  readonly #limit: number

  /** `limit`: how many links are kept (a fleet has a few admins, each with a short chain). */
  constructor(limit = 64) {
    this.#limit = limit
  }

  /** The link as decoded when its signature verified against the issuer it names, if it did. */
  get(signed: SignedCertificate): Certificate | undefined {
    return this.#verified.get(idOf(signed))
  }

  /** Remembers a link whose signature was just verified against its issuer. */
  verified(signed: SignedCertificate, cert: Certificate): void {
    if (this.#verified.size >= this.#limit)
      this.#verified.delete(this.#verified.keys().next().value as string)
    this.#verified.set(idOf(signed), cert)
  }

  get size(): number {
    return this.#verified.size
  }
}
