/**
 * Signed envelopes: { v, domain, payload, signer, sig, chain }.
 *
 * The payload is the canonical CBOR of a message; the signature covers the domain
 * and those exact bytes (keys/ed25519.ts), so a verifier checks what was signed,
 * never a re-encoding. `chain` carries the signer's admin certificates (empty for
 * agents, whose key the coordinator knows from enrollment). Opening checks the
 * domain and the signature; whether the signer may do this is a separate policy
 * question answered with verifyChain by the receiver.
 */

import { z } from 'zod'
import type { Domain } from '../keys/index.ts'
import {
  bytes,
  type PrivateKey,
  PublicKey,
  publicKeyBytes,
  type SignedCertificate,
  signatureBytes,
  signedCertificateSchema,
  verify,
} from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import { decodeMessage, encodeMessage } from './codec.ts'
import { MAX_ENVELOPE_BYTES } from './messages.ts'

export type EnvelopeErrorCode = 'malformed' | 'wrong-domain' | 'bad-signature' | 'bad-payload'

export class EnvelopeError extends CodedError<EnvelopeErrorCode> {
  override name = 'EnvelopeError'
}

const envelopeSchema = z.strictObject({
  v: z.literal(1),
  domain: z.string().min(1).max(64),
  payload: bytes(),
  signer: publicKeyBytes,
  sig: signatureBytes,
  chain: z.array(signedCertificateSchema).max(4),
})

export interface Opened<T> {
  value: T
  /** The exact signed payload bytes, e.g. for storing and forwarding unchanged. */
  payload: Uint8Array
  signer: PublicKey
  chain: SignedCertificate[]
}

export function sealEnvelope<S extends z.ZodType>(
  schema: S,
  domain: Domain,
  value: z.input<S>,
  signer: PrivateKey,
  chain: readonly SignedCertificate[] = [],
): Uint8Array {
  const payload = encodeMessage(schema, value)
  return encodeMessage(envelopeSchema, {
    v: 1,
    domain,
    payload,
    signer: signer.publicKey.bytes,
    sig: signer.sign(domain, payload),
    chain: [...chain],
  })
}

export function openEnvelope<S extends z.ZodType>(
  schema: S,
  domain: Domain,
  envelope: Uint8Array,
  maxBytes = MAX_ENVELOPE_BYTES,
): Opened<z.output<S>> {
  let outer: z.output<typeof envelopeSchema>
  try {
    // The container is not signed; its payload (decoded strictly below) is.
    outer = decodeMessage(envelopeSchema, envelope, 'signed envelope', maxBytes, { canonical: false })
  } catch (err) {
    throw new EnvelopeError('malformed', (err as Error).message, { cause: err })
  }
  if (outer.domain !== domain) {
    throw new EnvelopeError('wrong-domain', `expected a "${domain}" envelope, got "${outer.domain}"`)
  }
  if (!verify(outer.signer, domain, outer.payload, outer.sig)) {
    throw new EnvelopeError(
      'bad-signature',
      `signature by ${PublicKey.fromBytes(outer.signer)} does not verify`,
    )
  }
  let value: z.output<S>
  try {
    value = decodeMessage(schema, outer.payload, domain, maxBytes)
  } catch (err) {
    throw new EnvelopeError('bad-payload', (err as Error).message, { cause: err })
  }
  return { value, payload: outer.payload, signer: PublicKey.fromBytes(outer.signer), chain: outer.chain }
}
