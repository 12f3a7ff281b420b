/**
 * Kernel sources built once per variant. The matmul kernels are long unrolled WGSL; rebuilding the
 * string (and hashing it for the pipeline cache) on every call costs more than a decode-sized
 * kernel takes to run. `key` must name everything the source depends on.
 */
const sources = new Map<string, string>();

export function cachedSource(key: string, build: () => string): string {
  let s = sources.get(key);
  if (s === undefined) {
    s = build();
    sources.set(key, s);
  }
  return s;
}
