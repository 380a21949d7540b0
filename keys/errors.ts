/**
 * Typed errors for key material, signatures, certificates and tokens. Each has a
 * stable `name` (and, where several causes share a class, a `code`) so callers can
 * branch on them and so the wire protocol can report them without leaking stacks.
 */
import { CodedError } from '../lib/index.ts'

export class KeyFileError extends Error {
  override name = 'KeyFileError'
  readonly path: string
  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options)
    this.path = path
  }
}

export class InvalidKeyError extends Error {
  override name = 'InvalidKeyError'
}

export class SignatureError extends Error {
  override name = 'SignatureError'
}

export class EncodingError extends Error {
  override name = 'EncodingError'
}

export type CertificateErrorCode =
  | 'malformed'
  | 'bad-signature'
  | 'wrong-issuer'
  | 'expired'
  | 'not-yet-valid'
  | 'capability-missing'
  | 'out-of-scope'
  | 'revoked'
  | 'chain-too-long'
  | 'empty-chain'
  | 'signer-mismatch'

export class CertificateError extends CodedError<CertificateErrorCode> {
  override name = 'CertificateError'
}

export type TokenErrorCode = 'malformed' | 'bad-signature' | 'expired' | 'wrong-root' | 'unauthorised'

export class TokenError extends CodedError<TokenErrorCode> {
  override name = 'TokenError'
}

export class SealedBoxError extends Error {
  override name = 'SealedBoxError'
}
