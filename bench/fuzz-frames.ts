/**
 * The frames bench/fuzz.ts sends on one stream, as the bytes to write. Five kinds:
 *
 * - `random`: random bytes, mostly short, rarely up to 256 KiB;
 * - `cbor`: valid canonical CBOR of random structure, often shaped like a
 *   message (real field names and tags), sometimes nested past the decoder's
 *   depth limit;
 * - `mutated`: a real message (fuzz-seeds.ts) with bytes flipped, cut, added or
 *   duplicated, huge CBOR length headers written in, or a field replaced,
 *   removed or retyped (then, for signed payloads, signed again so the
 *   signature still verifies);
 * - `oversized`: a length prefix above every protocol's frame limit (up to
 *   2^32-1), then a few bytes;
 * - `split`: a frame (often a real message) written in 2 to 64 pieces with the
 *   event loop turning between them, a piece boundary often inside the prefix;
 *   a fifth of them stop before the end.
 *
 * Most streams carry one frame; three in ten carry 2 to 8, half of those in
 * one write, so several frames arrive in one chunk.
 */
import { randomBytes } from 'node:crypto'
import { decodeCanonical, encodeCanonical } from '../keys/index.ts'
import { BLOB_CHUNK_BYTES, encodeFramePrefix, MAX_ENVELOPE_BYTES } from '../protocol/index.ts'
import type { FuzzProtocol, SeedPool } from './fuzz-seeds.ts'

export const FUZZ_KINDS = ['random', 'cbor', 'mutated', 'oversized', 'split'] as const
export type FuzzKind = (typeof FUZZ_KINDS)[number]

/**
 * One write on the stream: `pause` turns the event loop after it, so the next
 * is a separate write; `ends` is how many frames it completes (0 for all but
 * the last piece of a split frame).
 */
export interface Write {
  bytes: Uint8Array
  pause: boolean
  ends: number
}

export interface StreamPlan {
  protocol: FuzzProtocol
  /** The kind of each frame, in order */
  kinds: FuzzKind[]
  writes: Write[]
  /** Close our side after writing (and read the answer), or reset the stream */
  end: 'close' | 'abort'
}

/** Above the largest frame any of the fuzzed protocols accepts (admin: the larger of an envelope and a blob chunk). */
const OVER_LIMIT = Math.max(MAX_ENVELOPE_BYTES + 4096, BLOB_CHUNK_BYTES) + 1

const KIND_WEIGHTS: [FuzzKind, number][] = [
  ['random', 0.2],
  ['cbor', 0.2],
  ['mutated', 0.35],
  ['oversized', 0.1],
  ['split', 0.15],
]

const FIELDS = [
  't',
  'v',
  'op',
  'nonce',
  'issuedAt',
  'body',
  'token',
  'facts',
  'sha256',
  'offset',
  'size',
  'domain',
  'payload',
  'signer',
  'sig',
  'chain',
  'envelope',
  'wire',
  'role',
  'software',
  'capabilities',
  'machine',
  'seq',
  'rolloutId',
  'after',
  'limit',
  'serial',
  'reason',
  'entry',
  'entries',
  'storePaths',
  'narinfos',
  'storePath',
  'count',
  'error',
  'code',
  'message',
  'lastAckedSeq',
  'revocations',
  'hash',
  'report',
]
const WORDS = [
  'hello',
  'enroll',
  'get',
  'manifest',
  'status',
  'ack',
  'ping',
  'pong',
  'error',
  'diagnose',
  'diagnosis',
  'revocations',
  'fleet-info',
  'machines',
  'submit-manifest',
  'watch',
  'audit',
  'audit-reads',
  'revoke',
  'nix-missing',
  'nix-put',
  'nix-closure',
  'machine-log',
  'doctor',
  'upload-blob',
  'agent',
  'admin',
  'coordinator',
  'relay',
  'fleetmesh/admin-request/v1',
  'fleetmesh/status/v1',
  'fm1',
  'honest',
  '',
]
const NUMBERS = [
  0,
  1,
  -1,
  255,
  256,
  65_535,
  2 ** 31,
  2 ** 32,
  Number.MAX_SAFE_INTEGER,
  -Number.MAX_SAFE_INTEGER,
]

export const rand = (n: number): number => Math.floor(Math.random() * n)
const chance = (p: number): boolean => Math.random() < p
const oneOf = <T>(items: readonly T[]): T => items[rand(items.length)] as T

function weighted<T>(table: readonly [T, number][]): T {
  let r = Math.random()
  for (const [item, weight] of table) {
    r -= weight
    if (r < 0) return item
  }
  return (table.at(-1) as [T, number])[0]
}

function randomText(): string {
  const r = Math.random()
  if (r < 0.4) return oneOf(WORDS)
  if (r < 0.7) return randomBytes(rand(40)).toString('hex')
  if (r < 0.97) {
    const codePoints = Array.from({ length: rand(16) }, () => rand(0x2_ffff))
    return String.fromCodePoint(...codePoints.filter((c) => c < 0xd800 || c > 0xdfff))
  }
  return 'x'.repeat(rand(70_000))
}

/** A random value cborg can encode: the shapes messages are made of, and some they are not. */
export function randomValue(depth = 0): unknown {
  const leaf = depth >= 4 || chance(0.5)
  switch (leaf ? rand(7) : 7 + rand(2)) {
    case 0:
      return chance(0.5) ? oneOf(NUMBERS) : rand(1_000_000) - 500_000
    case 1:
      return chance(0.8) ? Math.random() * 10 ** rand(300) : -0
    case 2:
      return randomText()
    case 3:
      return new Uint8Array(randomBytes(oneOf([0, 16, 32, 64, rand(300)])))
    case 4:
      return chance(0.5)
    case 5:
      return null
    case 6:
      // 64-bit integers: canonical CBOR, but beyond what the decoder accepts
      return chance(0.5) ? 2n ** 64n - 1n : -(2n ** 63n)
    case 7:
      return Array.from({ length: rand(8) }, () => randomValue(depth + 1))
    default:
      return Object.fromEntries(
        Array.from({ length: rand(8) }, () => [
          chance(0.7) ? oneOf(FIELDS) : randomText(),
          randomValue(depth + 1),
        ]),
      )
  }
}

/** Canonical CBOR: message-shaped maps, arbitrary values, or nesting past the decoder's depth limit. */
function randomCbor(): Uint8Array {
  const pick = Math.random()
  if (pick < 0.08) {
    // [[[…[0]…]]]: 0x81 is an array of one
    const depth = chance(0.5) ? 20 + rand(30) : 1000 + rand(100_000)
    const bytes = new Uint8Array(depth + 1).fill(0x81)
    bytes[depth] = 0
    return bytes
  }
  if (pick < 0.6) {
    const msg: Record<string, unknown> = { [oneOf(['t', 'op', 'v'])]: oneOf(WORDS) }
    for (let i = rand(6); i > 0; i--) msg[oneOf(FIELDS)] = randomValue(1)
    return encodeCanonical(msg)
  }
  return encodeCanonical(randomValue())
}

// ---------------------------------------------------------------- mutations

function concat(...parts: Uint8Array[]): Uint8Array {
  return new Uint8Array(Buffer.concat(parts))
}

/** CBOR heads announcing 2^63-ish byte strings, text, arrays and maps. */
const HUGE_HEADS = [0x5b, 0x7b, 0x9b, 0xbb].map((major) =>
  Uint8Array.of(major, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
)

function mutateBytes(input: Uint8Array): Uint8Array {
  let b: Uint8Array = Uint8Array.from(input)
  for (let n = 1 + rand(3); n > 0; n--) {
    const at = rand(b.length + 1)
    switch (rand(8)) {
      case 0:
      case 1: {
        const i = Math.min(at, b.length - 1)
        if (i >= 0) b[i] = (b[i] ?? 0) ^ (chance(0.5) ? 1 + rand(255) : 1 << rand(8))
        break
      }
      case 2:
        b = b.subarray(0, at)
        break
      case 3:
        b = concat(b, randomBytes(1 + rand(64)))
        break
      case 4:
        b = concat(b.subarray(0, at), randomBytes(1 + rand(16)), b.subarray(at))
        break
      case 5:
        b = concat(b.subarray(0, at), b.subarray(Math.min(b.length, at + 1 + rand(32))))
        break
      case 6: {
        const len = 1 + rand(64)
        b = concat(b.subarray(0, at), b.subarray(at, at + len), b.subarray(at))
        break
      }
      default:
        b = concat(b.subarray(0, at), oneOf(HUGE_HEADS), b.subarray(at))
    }
  }
  return b
}

/** Replaces, removes or adds one field somewhere in a decoded message; the result may fail its schema. */
function mutateValue(value: unknown): unknown {
  const nodes: { parent: Record<string, unknown> | unknown[]; key: string | number }[] = []
  const walk = (v: unknown) => {
    if (v instanceof Uint8Array || v === null || typeof v !== 'object') return
    for (const [k, child] of Object.entries(v)) {
      nodes.push({ parent: v as Record<string, unknown>, key: Array.isArray(v) ? Number(k) : k })
      walk(child)
    }
  }
  const root = { root: structuredClone(value) }
  walk(root)
  const node = oneOf(nodes)
  const parent = node.parent as Record<string | number, unknown>
  switch (rand(4)) {
    case 0:
      if (Array.isArray(node.parent)) node.parent.splice(node.key as number, 1)
      else delete parent[node.key]
      break
    case 1:
      if (!Array.isArray(node.parent)) parent[oneOf(FIELDS)] = randomValue(2)
      else node.parent.push(randomValue(2))
      break
    default:
      parent[node.key] = chance(0.5)
        ? randomValue(2)
        : oneOf([...NUMBERS, '', 'x'.repeat(5000), null, [], {}])
  }
  return root.root
}

function mutated(pool: SeedPool, protocol: FuzzProtocol): Uint8Array {
  const seed = pool.pick(protocol)
  if (chance(0.5)) return mutateBytes(seed.bytes)
  try {
    if (seed.signed !== undefined && chance(0.5)) return seed.signed.reseal(mutateValue(seed.signed.value))
    return encodeCanonical(mutateValue(decodeCanonical(seed.bytes, 1 << 20)))
  } catch {
    // a value cborg will not encode: mutate the bytes instead
    return mutateBytes(seed.bytes)
  }
}

function randomPayload(): Uint8Array {
  const r = Math.random()
  return randomBytes(r < 0.005 ? 65_536 + rand(BLOB_CHUNK_BYTES - 65_536) : r < 0.05 ? rand(4096) : rand(256))
}

const framed = (payload: Uint8Array): Uint8Array => concat(encodeFramePrefix(payload.byteLength), payload)

/** Splits a frame into 2–64 pieces, the first often cut inside the 4-byte prefix; sometimes drops the tail. */
function split(frame: Uint8Array): Write[] {
  const pieces = Math.min(frame.length, 2 + rand(63))
  const cuts = new Set<number>([chance(0.5) ? 1 + rand(3) : rand(frame.length)])
  while (cuts.size < pieces - 1) cuts.add(1 + rand(frame.length - 1))
  const sorted = [...cuts].filter((c) => c > 0 && c < frame.length).sort((a, b) => a - b)
  const writes: Write[] = []
  let from = 0
  for (const to of [...sorted, frame.length]) {
    writes.push({ bytes: frame.subarray(from, to), pause: true, ends: 0 })
    from = to
  }
  if (chance(0.2) && writes.length > 1) writes.length = 1 + rand(writes.length - 1)
  ;(writes.at(-1) as Write).ends = 1
  return writes
}

const whole = (bytes: Uint8Array): Write[] => [{ bytes, pause: false, ends: 1 }]

function frameOf(kind: FuzzKind, pool: SeedPool, protocol: FuzzProtocol): Write[] {
  switch (kind) {
    case 'random':
      return whole(framed(randomPayload()))
    case 'cbor':
      return whole(framed(randomCbor()))
    case 'mutated':
      return whole(framed(mutated(pool, protocol)))
    case 'oversized': {
      const size = chance(0.3) ? 0xffff_ffff : OVER_LIMIT + rand(0xffff_ffff - OVER_LIMIT)
      return whole(concat(encodeFramePrefix(size), randomBytes(rand(1024))))
    }
    case 'split': {
      const r = Math.random()
      const payload = r < 0.3 ? pool.pick(protocol).bytes : r < 0.65 ? mutated(pool, protocol) : randomCbor()
      return split(framed(payload))
    }
  }
}

/** What one stream of `protocol` carries; at most `maxFrames` frames. */
export function planStream(pool: SeedPool, protocol: FuzzProtocol, maxFrames: number): StreamPlan {
  const count = Math.min(maxFrames, chance(0.7) ? 1 : 2 + rand(7))
  const kinds: FuzzKind[] = []
  const writes: Write[] = []
  const together = chance(0.5)
  for (let i = 0; i < count; i++) {
    const kind = weighted(KIND_WEIGHTS)
    kinds.push(kind)
    const frame = frameOf(kind, pool, protocol)
    const last = writes.at(-1)
    if (together && frame.length === 1 && last !== undefined && !last.pause) {
      writes[writes.length - 1] = {
        bytes: concat(last.bytes, (frame[0] as Write).bytes),
        pause: false,
        ends: last.ends + 1,
      }
    } else writes.push(...frame)
  }
  return { protocol, kinds, writes, end: chance(0.03) ? 'abort' : 'close' }
}
