/**
 * @packageDocumentation
 *
 * Key material for fleetmesh: Ed25519 identities (which are also libp2p PeerIds),
 * domain-separated signatures, the fleet root's admin certificates, enrollment
 * tokens and sealed boxes.
 *
 * @example
 *
 * ```ts
 * import { PrivateKey, issueCertificate, verifyChain } from './keys/index.ts'
 *
 * const root = PrivateKey.generate()
 * const admin = PrivateKey.generate()
 * const cert = issueCertificate(root, {
 *   subject: admin.publicKey, name: 'alice', capabilities: ['deploy'],
 *   scope: { machines: [], tags: ['lab'] }, notAfter: Date.now() + 86_400_000,
 * })
 * verifyChain([cert], { root: root.publicKey, signer: admin.publicKey, capability: 'deploy',
 *   target: { kind: 'machine', name: 'm1', tags: ['lab'] } })
 * ```
 */
export * from './canonical.ts'
export * from './certificate.ts'
export * from './certificate-memo.ts'
export * from './domains.ts'
export * from './ed25519.ts'
export * from './errors.ts'
export * from './identity.ts'
export * from './nix-key.ts'
export * from './schema.ts'
export * from './sealed.ts'
export * from './token.ts'
