/**
 * Noise as every fleetmesh host runs it (net/host.ts): the library's
 * encrypter with node's X25519 key objects kept (noise-crypto.ts), and a frame
 * length reader that does not throw.
 *
 * @chainsafe/libp2p-noise reads each 2-byte frame length with a function that
 * throws a RangeError when fewer than two bytes are buffered, and its decoder
 * catches that to wait for more. That is every read that ends on a frame
 * boundary, nearly all of them: a coordinator taking a burst of reports spent
 * 9 % of its main thread building those errors' stack traces. The reader here
 * answers a length of 0 instead, which asks for the two bytes that are not
 * there, so the decoder waits without an exception. Frames are decoded as
 * before; test/net/noise.test.ts checks both, on real connections.
 */
import { type NoiseComponents, noise } from '@chainsafe/libp2p-noise'
import type { ConnectionEncrypter, SecuredConnection } from '@libp2p/interface'
import { LengthPrefixedDecoder } from '@libp2p/utils'
import type { Uint8ArrayList } from 'uint8arraylist'
import { noiseCrypto } from './noise-crypto.ts'

/** A Noise frame's length, or 0 (read as "two bytes needed") while its 2-byte prefix is not all here. */
export function noiseFrameLength(data: Uint8ArrayList | Uint8Array): number {
  if (data.length < 2) return 0
  if (data instanceof Uint8Array) return ((data[0] as number) << 8) | (data[1] as number)
  return data.getUint16(0)
}

/**
 * Gives a secured connection's frame decoder the reader above. The decoder is
 * the library's own field: if a later version moves it, the connection is left
 * as it is (and the test fails, so the upgrade is noticed).
 */
function quietFrames<T>(secured: SecuredConnection<T>): SecuredConnection<T> {
  const decoder: unknown = Reflect.get(secured.connection, 'decoder')
  if (decoder instanceof LengthPrefixedDecoder) Reflect.set(decoder, 'lengthDecoder', noiseFrameLength)
  return secured
}

export function fleetNoise(): (components: NoiseComponents) => ConnectionEncrypter {
  const make = noise({ crypto: noiseCrypto })
  return (components) => {
    const encrypter = make(components)
    const outbound = encrypter.secureOutbound.bind(encrypter)
    const inbound = encrypter.secureInbound.bind(encrypter)
    encrypter.secureOutbound = async (connection, options) => quietFrames(await outbound(connection, options))
    encrypter.secureInbound = async (connection, options) => quietFrames(await inbound(connection, options))
    return encrypter
  }
}
