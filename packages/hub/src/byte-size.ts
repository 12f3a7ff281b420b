/** Byte sizes given as numbers or as HF-style strings: "5GB" (10^9), "5GiB" (2^30), "500MB", "1.5TB". */

const UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
};

/** A positive byte count from a number or a string such as "5GB"; `what` names the option in errors. */
export function parseByteSize(size: number | string, what = 'size'): number {
  if (typeof size === 'number') {
    if (!(size > 0) || (!Number.isSafeInteger(size) && size !== Infinity)) throw new Error(`${what} must be a positive whole number of bytes, got ${size}`);
    return size;
  }
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(size);
  const unit = m ? UNITS[(m[2] || 'b').toLowerCase()] : undefined;
  if (!m || unit === undefined)
    throw new Error(`${what} ${JSON.stringify(size)} is not a size: use bytes or a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB`);
  const bytes = Math.floor(Number(m[1]) * unit);
  if (!(bytes > 0)) throw new Error(`${what} ${JSON.stringify(size)} must be positive`);
  return bytes;
}
