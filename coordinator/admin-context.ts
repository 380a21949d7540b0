/**
 * Who is asking the admin RPC (admin-rpc.ts) and what each request needs: the
 * capability per op, the request context every handler gets once signature,
 * freshness, nonce and certificate chain are checked, and the errors that are
 * refusals the admin is told about (anything else is an internal error).
 */
import type { Connection } from '@libp2p/interface'
import { type Authority, type Capability, CertificateError, type PublicKey } from '../keys/index.ts'
import { CodedError } from '../lib/index.ts'
import {
  type AdminOp,
  EnvelopeError,
  type FramedStream,
  MachineTagsRefusedError,
  ManifestRefusedError,
} from '../protocol/index.ts'
import { AgentRequestError } from './control.ts'
import { NixCacheError } from './nix-cache.ts'

export class AdminDenied extends CodedError<string> {
  override name = 'AdminDenied'
}

/**
 * The capability each request needs; the scope check is the handler's (or the
 * chain check's for fleet-wide ops): reads are cut to the machines the caller
 * covers, a manifest's targets must all be covered, a blob upload needs deploy
 * on some machine or tag, and a watch checks the chain again while it runs.
 */
export const CAPABILITY: Record<AdminOp['op'], Capability> = {
  'fleet-info': 'read',
  machines: 'read',
  watch: 'read',
  audit: 'read',
  'audit-reads': 'read',
  'submit-manifest': 'deploy',
  'upload-blob': 'deploy',
  'nix-missing': 'deploy',
  'nix-put': 'deploy',
  'nix-closure': 'deploy',
  'machine-log': 'read',
  'machine-history': 'read',
  ping: 'read',
  doctor: 'read',
  revoke: 'admin',
  // deploying needs the list too: a manifest names the revocation head its signer saw
  revocations: 'read',
  // rollouts in waves (admin-rollouts.ts): reads, and changes needing deploy on all their machines
  'submit-waves': 'deploy',
  'rollout-control': 'deploy',
  'rollout-list': 'read',
  'rollout-show': 'read',
  'desired-manifests': 'read',
  // tags are what an enrollment token grants (admin-tags.ts); each record's rules check the scope
  'set-tags': 'enroll',
  'tag-versions': 'read',
  // a fleet file's apply (admin-apply.ts); one with tag records only needs "enroll" (capabilityFor),
  // and each record and manifest in it meets its own rules too, as when sent alone
  apply: 'deploy',
}

/** The capability a request needs: CAPABILITY's, but an apply of tag records alone needs what set-tags does. */
export function capabilityFor(body: AdminOp): Capability {
  return body.op === 'apply' && body.rollouts.length === 0 ? CAPABILITY['set-tags'] : CAPABILITY[body.op]
}

/** What the audit log records about whoever sent a request, also one refused before its signature was checked. */
export interface Caller {
  peerId: string
  /** The signer's public key once the envelope opened, else null. */
  actor: string | null
  /** The request exactly as received. */
  request: Uint8Array
}

/**
 * Who is asking, established before any handler runs: the request's signature,
 * freshness, nonce and certificate chain have all been checked.
 */
export interface AdminRequestContext extends Caller {
  actor: string
  signer: PublicKey
  /** The signer's verified certificate chain: who they are, their capabilities and scope. */
  authority: Authority
  op: AdminOp['op']
  /** The request's nonce, unique per request: its id. */
  nonce: string
  issuedAt: number
  receivedAt: number
  connection: Connection
  stream: FramedStream
}

/** Refusals the admin is told about as such; anything else is an internal error. */
export const REFUSALS = [
  AdminDenied,
  AgentRequestError,
  CertificateError,
  EnvelopeError,
  MachineTagsRefusedError,
  ManifestRefusedError,
  NixCacheError,
] as const
