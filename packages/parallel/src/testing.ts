/**
 * Test support. `rejection(promise)` awaits a promise that must reject and returns its error.
 * Use it instead of `expect(promise).rejects`: Bun waits for that promise in a nested event loop
 * that does not deliver Worker messages, so a rejection that depends on one arrives only after
 * a timeout (measured: the worker's answer held back ~10 s, until the watchdog fired).
 */
export async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
  throw new Error('expected the promise to reject, but it resolved');
}
