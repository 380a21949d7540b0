/**
 * Ed25519 and signed-envelope rates. Reference: the raw native (node:crypto)
 * verify rate; the envelope figure's ratio to it shows what decoding, schema
 * validation and domain separation cost on top of the signature check itself.
 */
import {
  DOMAINS,
  nodeEd25519,
  PrivateKey,
  signingInput,
  tweetnaclEd25519,
  useEd25519,
} from '../keys/index.ts'
import { openEnvelope, sealEnvelope, statusReportSchema } from '../protocol/index.ts'
import { sampleStatus } from '../testkit/fixtures.ts'
import { fmt, line, measureRate } from './measure.ts'

export function benchCrypto(seconds: number): Record<string, number> {
  const key = PrivateKey.generate()
  const seed = key.exportSeed()
  const pub = key.publicKey.bytes
  const msg = signingInput(DOMAINS.status, new Uint8Array(300).fill(1))
  const out: Record<string, number> = {}

  console.log('Ed25519 (300-byte message)')
  for (const impl of [tweetnaclEd25519, nodeEd25519]) {
    const signer = impl.signer(seed)
    const sig = signer(msg)
    // tweetnacl is ~100x slower; give it a shorter window so the run stays quick.
    const s = impl === tweetnaclEd25519 ? Math.min(seconds, 1) : seconds
    const signRate = measureRate(() => signer(msg), s, impl === tweetnaclEd25519 ? 2 : 32)
    const verifyRate = measureRate(() => impl.verifyRaw(pub, msg, sig), s, impl === tweetnaclEd25519 ? 2 : 32)
    line(`${impl.name} sign`, `${fmt(signRate.perSecond)} /s`)
    line(`${impl.name} verify`, `${fmt(verifyRate.perSecond)} /s`)
    out[`${impl.name} sign/s`] = signRate.perSecond
    out[`${impl.name} verify/s`] = verifyRate.perSecond
  }
  const nativeVerify = out['node:crypto verify/s'] as number
  line(
    'node:crypto verify ÷ tweetnacl verify',
    `${fmt(nativeVerify / (out['tweetnacl verify/s'] as number), 1)}x`,
  )

  useEd25519(nodeEd25519)
  const envelope = sealEnvelope(statusReportSchema, DOMAINS.status, sampleStatus(), key)
  const envRate = measureRate(() => openEnvelope(statusReportSchema, DOMAINS.status, envelope), seconds, 32)
  console.log(`Signed status envelope (${envelope.byteLength} bytes): decode + validate + verify`)
  line('envelope open', `${fmt(envRate.perSecond)} /s`)
  line('ratio to raw native verify (reference)', `${fmt((envRate.perSecond / nativeVerify) * 100, 1)} %`)
  out['envelope open/s'] = envRate.perSecond
  out['envelope/native verify ratio'] = envRate.perSecond / nativeVerify
  return out
}
