/**
 * WGSL building blocks shared by the kernels: storage declarations per dtype (bf16 packed two per
 * u32 word), f32 loaders, and the flat invocation index for grids that spill into y.
 */
import type { DType } from '../dtype';

/** The WGSL element type a storage array of `dtype` is declared with. */
export function storageElement(dtype: DType): 'f32' | 'u32' | 'i32' {
  return dtype === 'f32' ? 'f32' : dtype === 'i32' ? 'i32' : 'u32';
}

export function declareStorage(binding: number, name: string, dtype: DType, access: 'read' | 'read_write'): string {
  return `@group(0) @binding(${binding}) var<storage, ${access}> ${name}: array<${storageElement(dtype)}>;`;
}

/** `fn load_<name>(i: u32) -> f32` reading element i of a storage array declared with {@link declareStorage}. */
export function loaderF32(name: string, dtype: DType): string {
  switch (dtype) {
    case 'f32':
      return `fn load_${name}(i: u32) -> f32 { return ${name}[i]; }`;
    case 'bf16':
      return `fn load_${name}(i: u32) -> f32 { let w = ${name}[i >> 1u]; return bitcast<f32>(select(w << 16u, w & 0xffff0000u, (i & 1u) == 1u)); }`;
    case 'i32':
    case 'u32':
      return `fn load_${name}(i: u32) -> f32 { return f32(${name}[i]); }`;
  }
}

/** The binding and loader for a read-only input, as one snippet. */
export function inputF32(binding: number, name: string, dtype: DType): string {
  return `${declareStorage(binding, name, dtype, 'read')}\n${loaderF32(name, dtype)}`;
}

/** Built-in arguments for a 1-D kernel launched with `device.grid(n, WG)`. */
export const GRID_ARGS = '@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>';

/** Flat invocation index for a 1-D kernel with workgroup size `wg` launched with `device.grid`. */
export function flatIndex(wg: number): string {
  return `gid.x + gid.y * nwg.x * ${wg}u`;
}

/**
 * Accurate log(1 + x) in f32 (WGSL has no log1p, and `log(1 + x)` near 1 carries an absolute,
 * not relative, error on some drivers — llvmpipe loses ~5e-5 relative at x = 1e-3). Small |x| use
 * log1p(x) = 2·atanh(s), s = x / (2 + x), as an odd series; the rest is far enough from 1.
 */
export const LOG1P_F32 = `fn log1p_f32(x: f32) -> f32 {
  if (abs(x) < 0.5) {
    let s = x / (2.0 + x);
    let s2 = s * s;
    return 2.0 * s * (1.0 + s2 * (0.33333334 + s2 * (0.2 + s2 * (0.14285715 + s2 * (0.11111111 + s2 * (0.09090909 + s2 * 0.07692308))))));
  }
  return log(1.0 + x);
}`;

/**
 * NaN-propagating float helpers, so every kernel passes NaN on as the CPU reference does. WGSL's
 * `max`, `min` and `clamp` need not return NaN for a NaN operand (llvmpipe and lavapipe return the
 * other one: relu² turned a NaN weight into 0), and compilers may fold `x != x` to false, so NaN is
 * recognised by its bits. `max_nan` / `min_nan` follow Math.max / Math.min: NaN if either is NaN.
 */
export const NAN_SAFE_F32 = `fn is_nan_f32(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
fn is_nan_v4(v: vec4<f32>) -> vec4<bool> { return (bitcast<vec4<u32>>(v) & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u); }
fn unordered_f32(a: f32, b: f32) -> bool { return is_nan_f32(a) || is_nan_f32(b); }
fn max_nan(a: f32, b: f32) -> f32 { return select(select(max(a, b), b, is_nan_f32(b)), a, is_nan_f32(a)); }
fn min_nan(a: f32, b: f32) -> f32 { return select(select(min(a, b), b, is_nan_f32(b)), a, is_nan_f32(a)); }
fn clamp_nan(x: f32, lo: f32, hi: f32) -> f32 { return select(min(max(x, lo), hi), x, is_nan_f32(x)); }
fn sign_nan(x: f32) -> f32 { return select(sign(x), x, is_nan_f32(x)); }
fn relu_nan(x: f32) -> f32 { return select(max(x, 0.0), x, is_nan_f32(x)); }
fn relu_nan_v4(v: vec4<f32>) -> vec4<f32> { return select(max(v, vec4<f32>(0.0)), v, is_nan_v4(v)); }`;

/**
 * Math with relative accuracy near the points where llvmpipe's builtins only reach absolute
 * accuracy: `log_f32` near 1, `tanh_f32` near 0 (its builtin goes through exp), `softplus_f32` with
 * PyTorch's threshold 20; plus {@link NAN_SAFE_F32}. Kernels that need any of these include this prelude.
 */
export const MATH_F32 = `${LOG1P_F32}
${NAN_SAFE_F32}
fn log_f32(x: f32) -> f32 {
  // x - 1 is exact for x in [0.5, 2] (Sterbenz).
  if (abs(x - 1.0) < 0.5) { return log1p_f32(x - 1.0); }
  return log(x);
}
fn softplus_f32(x: f32) -> f32 {
  if (x > 20.0) { return x; }
  return max(x, 0.0) + log1p_f32(exp(-abs(x)));
}
fn tanh_f32(x: f32) -> f32 {
  if (is_nan_f32(x)) { return x; }
  let a = abs(x);
  if (a < 0.3) {
    let x2 = x * x;
    return x * (1.0 + x2 * (-0.33333334 + x2 * (0.13333334 + x2 * (-0.053968254 + x2 * (0.021869488 + x2 * (-0.008863236))))));
  }
  // Clamped: tanh is ±1 in f32 beyond 9, and drivers that expand it through exp() stay finite.
  return tanh(clamp_nan(x, -9.0, 9.0));
}`;

/** f32 → bf16 bits, round to nearest even, NaN kept quiet (matches `f32ToBf16Bits` on the host). */
export const F32_TO_BF16 = `fn f32_to_bf16(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return ((b >> 16u) | 0x40u) & 0xffffu; }
  return ((b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u) & 0xffffu;
}`;
