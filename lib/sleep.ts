/**
 * Waiting that can be cut short. One abort behaviour everywhere: an aborted
 * wait rejects with the signal's reason, so a loop that sleeps between tries
 * ends as soon as its owner stops it instead of finishing the nap first.
 */

/** Resolves after `ms`, or rejects with `signal.reason` as soon as `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal === undefined) return new Promise((resolve) => setTimeout(resolve, ms))
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(signal.reason)
    }
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal.addEventListener('abort', onAbort, { once: true })
  })
}

/** Settles with `promise`, or rejects with the signal's reason if it aborts first. */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort)
        resolve(value)
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort)
        reject(err)
      },
    )
  })
}

/**
 * A sleep that its owner can end early without treating it as a failure: a
 * reconnect loop's pause that a "try now" (a new address, a stop) cuts short.
 */
export class WakeableSleep {
  #controller: AbortController | undefined

  /** Waits `ms`, or less if {@link wake} is called meanwhile; never rejects. */
  async sleep(ms: number): Promise<void> {
    const controller = new AbortController()
    this.#controller = controller
    try {
      await sleep(ms, controller.signal)
    } catch {
      // woken early: that is the point
    } finally {
      if (this.#controller === controller) this.#controller = undefined
    }
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    this.#controller?.abort()
  }
}
