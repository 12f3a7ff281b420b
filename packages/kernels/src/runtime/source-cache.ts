/**
 * Kernel sources built once per variant, for every kernel family. Long generated WGSL (unrolled
 * matmul tiles, flash attention, the fused Mamba decode step) costs more to rebuild — and to hash for
 * the pipeline cache — than a decode-sized kernel takes to run. `key` must name the family and
 * everything the source depends on.
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
