/**
 * The total order top-k and argmax use, shared by the kernels and the CPU reference: larger values
 * first, NaN above +∞, −0 equal to +0, and ties broken by the lower index. Each f32 maps to a u32
 * key whose unsigned order is the value order, so kernels compare integers only (no reliance on
 * NaN or infinity semantics of a shader compiler).
 */

/** WGSL: `order_key`, its inverse `key_value` (NaN canonical, −0 as +0) and the `beats` order. */
export const ORDER_WGSL = `
fn order_key(v: f32) -> u32 {
  var b = bitcast<u32>(v);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0xffffffffu; }
  if (b == 0x80000000u) { b = 0u; }
  if ((b & 0x80000000u) != 0u) { return ~b; }
  return b | 0x80000000u;
}
fn key_value(k: u32) -> f32 {
  // A var, not a constant: a NaN const-expression does not compile.
  var nan_bits = 0x7fc00000u;
  if (k == 0xffffffffu) { return bitcast<f32>(nan_bits); }
  if ((k & 0x80000000u) != 0u) { return bitcast<f32>(k & 0x7fffffffu); }
  return bitcast<f32>(~k);
}
// True when (ka, ia) comes before (kb, ib): larger key first, then lower index.
fn beats(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
  return ka > kb || (ka == kb && ia < ib);
}`;

/**
 * A key below every real one (the smallest real key, −∞'s, is 0x007fffff) with an index that loses
 * every tie: pads candidate lists of chunks shorter than k.
 */
export const SENTINEL_WGSL = { key: '0u', index: '0xffffffffu' };

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The order key of a value (host side, same mapping as `order_key`). */
export function orderKey(v: number): number {
  f32[0] = v;
  let b = u32[0]!;
  if ((b & 0x7fffffff) > 0x7f800000) return 0xffffffff;
  if (b === 0x80000000) b = 0;
  return b & 0x80000000 ? ~b >>> 0 : (b | 0x80000000) >>> 0;
}
