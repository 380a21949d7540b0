/**
 * Runs async sections one at a time, in call order. State files are
 * read-modify-write, so two overlapping sections would lose one of the writes.
 */
export function serialiser(): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve()
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn)
    tail = run.catch(() => {})
    return run
  }
}
