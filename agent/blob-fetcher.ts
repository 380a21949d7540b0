/**
 * Downloads `coordinator` blob sources over `/fleetmesh/blob/1`, resuming from
 * the bytes already in `dest` after an interruption (the coordinator serves from
 * any offset). A coordinator that is restarting or unreachable is waited for with
 * backoff, because failing would burn the manifest: an attempted manifest is not
 * retried. Only definitive answers (no such blob, wrong size) fail at once; a
 * coordinator unreachable for `maxWaitMs` without progress fails too.
 */
import { open } from 'node:fs/promises'
import type { PeerId } from '@libp2p/interface'
import { fileSize } from '../lib/index.ts'
import { type FleetHost, openStream } from '../net/index.ts'
import {
  blobRequestSchema,
  blobResponseSchema,
  decodeMessage,
  encodeMessage,
  FramedStream,
  PROTOCOLS,
} from '../protocol/index.ts'
import { ActivatorError, type BlobFetcher } from './profile-activator.ts'

export const BLOB_FRAME_BYTES = 256 * 1024

export interface CoordinatorFetcherInit {
  /** Give up after this long without receiving a byte. Default 1 h. */
  maxWaitMs?: number
  initialBackoffMs?: number
  maxBackoffMs?: number
}

export function coordinatorBlobFetcher(
  host: FleetHost,
  coordinator: PeerId,
  init: CoordinatorFetcherInit = {},
): BlobFetcher {
  const maxWaitMs = init.maxWaitMs ?? 3_600_000
  const initial = init.initialBackoffMs ?? 250
  const maxBackoff = init.maxBackoffMs ?? 15_000
  return {
    async fetch(sha256, size, _sources, dest, onProgress, signal) {
      let lastError: unknown
      let lastProgressAt = Date.now()
      for (let attempt = 0; ; attempt++) {
        signal.throwIfAborted()
        const before = (await fileSize(dest)) ?? 0
        if (before >= size) return
        try {
          await fetchOnce(host, coordinator, sha256, size, before, dest, onProgress, signal)
          return
        } catch (err) {
          if (signal.aborted || err instanceof ActivatorError) throw err
          lastError = err
        }
        if (((await fileSize(dest)) ?? 0) > before) {
          lastProgressAt = Date.now()
          attempt = 0
        }
        if (Date.now() - lastProgressAt > maxWaitMs) break
        const cap = Math.min(maxBackoff, initial * 2 ** Math.min(attempt, 10))
        await sleep(cap / 2 + (Math.random() * cap) / 2, signal)
      }
      throw new ActivatorError(
        'download-failed',
        `blob ${sha256}: no progress from the coordinator for ${Math.round(maxWaitMs / 1000)} s (${(lastError as Error)?.message})`,
        { cause: lastError },
      )
    },
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    const onAbort = () => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

async function fetchOnce(
  host: FleetHost,
  coordinator: PeerId,
  sha256: string,
  size: number,
  offset: number,
  dest: string,
  onProgress: (done: number) => void,
  signal: AbortSignal,
): Promise<void> {
  const stream = await openStream(host, coordinator, PROTOCOLS.blob, { signal })
  const fs = new FramedStream(stream, { maxFrameBytes: BLOB_FRAME_BYTES + 1024 })
  const file = await open(dest, 'a', 0o600)
  try {
    await fs.send(encodeMessage(blobRequestSchema, { t: 'get', sha256, offset }))
    const response = decodeMessage(
      blobResponseSchema,
      await fs.readOne({ signal, timeoutMs: 30_000 }),
      'blob response',
      4096,
    )
    if (!response.ok)
      throw new ActivatorError(
        'download-failed',
        `coordinator: ${response.error.code}: ${response.error.message}`,
      )
    if (response.size !== size) {
      throw new ActivatorError(
        'artifact-mismatch',
        `coordinator has ${response.size} bytes for ${sha256}, the manifest says ${size}`,
      )
    }
    let done = offset
    while (done < size) {
      const chunk = await fs.read({ signal, timeoutMs: 60_000 })
      if (chunk === undefined) throw new Error(`stream ended at ${done} of ${size} bytes`)
      if (done + chunk.byteLength > size)
        throw new ActivatorError('artifact-mismatch', `coordinator sent more than ${size} bytes`)
      await file.write(chunk)
      done += chunk.byteLength
      onProgress(done)
    }
    await file.sync()
  } finally {
    await file.close()
    if (fs.stream.status === 'open') await fs.close().catch(() => {})
  }
}
