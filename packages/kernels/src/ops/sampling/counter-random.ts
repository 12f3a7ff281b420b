/**
 * Counter-based random numbers for sampling: a uniform in [0, 1) from (seed, row, counter) by an
 * integer hash, computed identically by the kernels and on the host, so a seeded generation gives
 * the same tokens on every device and a recorded step needs no host input (the counter is a
 * device tensor).
 */

/** WGSL: `uniform_hash(seed, row, counter) -> f32` in [0, 1), 24 random bits. */
export const COUNTER_RANDOM_WGSL = `
fn mix32(v: u32) -> u32 {
  var h = v;
  h = (h ^ (h >> 16u)) * 0x7feb352du;
  h = (h ^ (h >> 15u)) * 0x846ca68bu;
  return h ^ (h >> 16u);
}
fn uniform_hash(seed: u32, row: u32, counter: u32) -> f32 {
  let h = mix32(mix32(mix32(seed) ^ (row * 0x9e3779b9u)) ^ (counter * 0x85ebca6bu));
  return f32(h >> 8u) * (1.0 / 16777216.0);
}`;

function mix32(v: number): number {
  let h = v >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** The host twin of `uniform_hash`. */
export function uniformHash(seed: number, row: number, counter: number): number {
  const h = mix32((mix32(mix32(seed) ^ Math.imul(row, 0x9e3779b9)) ^ Math.imul(counter, 0x85ebca6b)) >>> 0);
  return (h >>> 8) / 16777216;
}
