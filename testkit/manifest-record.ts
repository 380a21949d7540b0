/**
 * A manifest as the coordinator's store keeps it (NewManifest): sealed by
 * `admin`, submitted at its issue time unless said otherwise. Store, fan-out
 * and rollout tests build their records with this one helper.
 */
import type { NewManifest } from '../coordinator/store.ts'
import { DOMAINS, type PrivateKey } from '../keys/index.ts'
import { type Manifest, manifestSchema, sealEnvelope } from '../protocol/index.ts'

export function manifestRecord(
  manifest: Manifest,
  admin: PrivateKey,
  overrides: Partial<Pick<NewManifest, 'rolloutId' | 'generation' | 'submittedAt' | 'expiresAt'>> = {},
): NewManifest {
  return {
    id: manifest.id,
    sequence: manifest.sequence,
    rolloutId: manifest.rolloutId,
    generation: manifest.generation,
    targets: manifest.targets,
    envelope: sealEnvelope(manifestSchema, DOMAINS.manifest, manifest, admin),
    submittedBy: admin.publicKey.toString(),
    submittedAt: manifest.issuedAt,
    expiresAt: manifest.expiresAt,
    ...overrides,
  }
}
