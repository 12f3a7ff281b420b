/**
 * Liveness from inside long synchronous work. A worker computing on the CPU backend blocks its
 * event loop, so it cannot send heartbeats; it bumps a counter in memory shared with the host
 * instead (per layer, per request), which the host's watchdog reads. A worker that neither sends
 * heartbeats nor moves its counter is hung.
 */
let counter: Int32Array | null = null;

/** Worker side: the shared counter the host handed over (worker-entry.ts). */
export function setProgressCounter(shared: SharedArrayBuffer): void {
  counter = new Int32Array(shared);
}

/** Worker side: "still working" (cheap; call it between layers). */
export function reportProgress(): void {
  if (counter) Atomics.add(counter, 0, 1);
}
