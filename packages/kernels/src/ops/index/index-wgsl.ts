/** WGSL snippets shared by the index-family kernels: shape/stride arrays in the uniform and coordinate loops. */

/** Highest rank of an index space after collapsing dimensions. */
export const MAX_INDEX_RANK = 8;

/** Reads element d of a `u32Array` parameter. */
export const DIM_FN = 'fn dim(a: array<vec4<u32>, 2>, d: u32) -> u32 { return a[d / 4u][d % 4u]; }';

/**
 * Decodes the flat index `flat` over the shape array `shape` (rank `rank`, last dimension fastest)
 * and accumulates Σ c_d·strides_d into each `sums` variable (declared by the caller as `var`).
 */
export function accumulateCoords(flat: string, shape: string, rank: number, sums: readonly { variable: string; strides: string }[]): string {
  const lines = [`var rem_${shape.replace(/\W/g, '')} = ${flat};`];
  const rem = `rem_${shape.replace(/\W/g, '')}`;
  for (let d = rank - 1; d >= 0; d--) {
    const c = `c_${shape.replace(/\W/g, '')}${d}`;
    lines.push(d === 0 ? `let ${c} = ${rem};` : `let ${c} = ${rem} % dim(${shape}, ${d}u); ${rem} = ${rem} / dim(${shape}, ${d}u);`);
    for (const s of sums) lines.push(`${s.variable} += ${c} * dim(${s.strides}, ${d}u);`);
  }
  return lines.join('\n  ');
}
