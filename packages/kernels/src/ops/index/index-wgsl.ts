/** WGSL snippets shared by the index-family kernels: shape/stride arrays in the uniform and coordinate loops. */

/** Highest rank of an index space after collapsing dimensions. */
export const MAX_INDEX_RANK = 8;

/** Element d of an `array<vec4<u32>, 2>` uniform field, with a constant index (dynamic indexing is slow on llvmpipe). */
function at(field: string, d: number): string {
  return `${field}[${d >> 2}][${d & 3}]`;
}

export interface StrideSum {
  /** A `var` the caller declared; Σ c_d·strides_d is added to it. */
  variable: string;
  /** Uniform field holding the strides. */
  field: string;
  /** The same strides on the host: 0 and 1 are baked into the source, others read from the field. */
  strides: readonly number[];
}

/**
 * Decodes the flat index `flat` over the uniform shape `shapeField` (rank `rank`, last dimension
 * fastest) and accumulates each stride sum.
 */
export function accumulateCoords(flat: string, shapeField: string, rank: number, sums: readonly StrideSum[]): string {
  const tag = shapeField.replace(/\W/g, '');
  const rem = `rem_${tag}`;
  const lines = [`var ${rem} = ${flat};`];
  for (let d = rank - 1; d >= 0; d--) {
    const c = `c_${tag}${d}`;
    lines.push(d === 0 ? `let ${c} = ${rem};` : `let ${c} = ${rem} % ${at(shapeField, d)}; ${rem} = ${rem} / ${at(shapeField, d)};`);
    for (const s of sums) {
      const stride = s.strides[d]!;
      if (stride !== 0) lines.push(`${s.variable} += ${stride === 1 ? c : `${c} * ${at(s.field, d)}`};`);
    }
  }
  return lines.join('\n  ');
}
