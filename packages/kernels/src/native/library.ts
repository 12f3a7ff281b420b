/**
 * The one home of the native CPU kernel library: builds it when missing (build.ts), loads it with
 * `bun:ffi`, checks that this CPU runs what it was compiled for, and sets its thread count
 * (`NEMOTRON_THREADS`, default: the cores this process may use). Ops reach it through
 * `CpuDevice.native`; when it is null they run the TypeScript reference. GEMMs (not decode's GEMV) go
 * through the system OpenBLAS when it loads (`NEMOTRON_BLAS`: a library name or path, default
 * libopenblas.so.0; `none` to use only our kernels).
 */
import { availableParallelism } from 'node:os';
import { isMainThread } from 'node:worker_threads';
import { buildNativeLibrary } from './build';
import { nativeRowName, opProfiling, profileSpan } from '../runtime/op-profile';
import type { Tensor } from '../tensor';

const FEATURE_NAMES: readonly [number, string][] = [
  [16, 'neon'],
  [4, 'avx512'],
  [8, 'bf16'],
  [1, 'avx2'],
  [2, 'fma'],
];

const SYMBOLS = {
  nt_set_threads: { args: ['i32'], returns: 'i32' },
  nt_cpu_features: { args: [], returns: 'i32' },
  nt_compiled_features: { args: [], returns: 'i32' },
  nt_load_blas: { args: ['cstring'], returns: 'i32' },
  nt_enable_blas: { args: ['i32'], returns: 'void' },
  nt_gemm: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_elementwise: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_ssd_scan: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_ssd_scan_backward: {
    args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'],
    returns: 'i32',
  },
  nt_state_update: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_norm: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_norm_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_causal_conv: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_causal_conv_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_adamw: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_sum_squares: { args: ['ptr', 'ptr'], returns: 'f64' },
  nt_embedding_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_cross_entropy: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_cross_entropy_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_scale: { args: ['ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_causal_conv_update: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_attention_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_attention: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_decode_step: { args: ['ptr'], returns: 'i32' },
  nt_decode_scratch_floats: { args: ['ptr', 'i32'], returns: 'f64' },
  nt_moe_route: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_moe_route_backward: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_moe_experts: { args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'], returns: 'f64' },
  nt_moe_experts_backward: {
    args: ['ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr', 'ptr'],
    returns: 'f64',
  },
  nt_sample_tokens: { args: ['ptr', 'ptr', 'ptr', 'ptr'], returns: 'i32' },
  nt_stream_read: { args: ['ptr', 'f64'], returns: 'f32' },
  nt_stream_copy: { args: ['ptr', 'ptr', 'f64'], returns: 'void' },
  nt_fma_peak: { args: ['f64'], returns: 'f64' },
} as const;

/** A buffer argument: a host ArrayBuffer or a view of one, passed as a pointer (null: absent). */
export type Buffers = ArrayBufferLike | ArrayBufferView | null;

/** A tensor's host buffer as a kernel argument (null for an absent operand). */
export const hostBuffer = (t: Tensor | null): ArrayBufferLike | null => t?.storage.cpu ?? null;

// The inputs a forward entry point and its backward both take first, in their order.
export type ScanInputs = [x: Buffers, dt: Buffers, A: Buffers, B: Buffers, C: Buffers, D: Buffers, init: Buffers, seq: Buffers];
export type ConvInputs = [x: Buffers, w: Buffers, bias: Buffers, init: Buffers, seq: Buffers];
export type AttentionInputs = [q: Buffers, k: Buffers, v: Buffers, mask: Buffers, seq: Buffers];
export type ExpertInputs = [x: Buffers, indices: Buffers, weights: Buffers, up: Buffers, down: Buffers, upBias: Buffers, downBias: Buffers];

/** The loaded library's entry points (host ArrayBuffers are passed as pointers). */
export interface NativeSymbols {
  /** Sets the calling thread's kernel threads; returns the count in effect. */
  nt_set_threads(n: number): number;
  /** 0 turns the loaded BLAS off (our f32 kernels run), 1 back on. */
  nt_enable_blas(on: number): void;
  nt_gemm(params: Float64Array, a: Buffers, b: Buffers, bias: Buffers, c: Buffers): number;
  nt_elementwise(params: Float64Array, out: Buffers, x0: Buffers, x1: Buffers, x2: Buffers): number;
  nt_ssd_scan(params: Float64Array, ...buffers: [...ScanInputs, y: Buffers, final: Buffers]): number;
  nt_ssd_scan_backward(
    params: Float64Array,
    ...buffers: [...ScanInputs, dy: Buffers, dx: Buffers, ddt: Buffers, dA: Buffers, dB: Buffers, dC: Buffers, dD: Buffers, dinit: Buffers]
  ): number;
  nt_state_update(
    params: Float64Array,
    state: Buffers,
    x: Buffers,
    dt: Buffers,
    A: Buffers,
    B: Buffers,
    C: Buffers,
    D: Buffers,
    bias: Buffers,
    y: Buffers,
  ): number;
  nt_norm(params: Float64Array, x: Buffers, z: Buffers, w: Buffers, out: Buffers): number;
  nt_norm_backward(params: Float64Array, x: Buffers, z: Buffers, w: Buffers, g: Buffers, dx: Buffers, dz: Buffers, dw: Buffers): number;
  nt_causal_conv(params: Float64Array, ...buffers: [...ConvInputs, y: Buffers, final: Buffers]): number;
  nt_causal_conv_backward(params: Float64Array, ...buffers: [...ConvInputs, dy: Buffers, dx: Buffers, dw: Buffers, db: Buffers, dinit: Buffers]): number;
  nt_adamw(params: Float64Array, p: Buffers, g: Buffers, m: Buffers, v: Buffers): number;
  nt_embedding_backward(params: Float64Array, ids: Buffers, g: Buffers, out: Buffers): number;
  /** One token per row of the logits (sampling.c); 0, or -1 when scratch memory ran out. */
  nt_sample_tokens(params: Float64Array, logits: Buffers, seen: Buffers, out: Buffers): number;
  nt_cross_entropy(params: Float64Array, logits: Buffers, labels: Buffers, lse: Buffers, loss: Buffers): number;
  nt_cross_entropy_backward(params: Float64Array, logits: Buffers, labels: Buffers, lse: Buffers, scale: Buffers, dx: Buffers): number;
  /** Σ x² in f64 over a dense f32 range (params: n, offset). */
  nt_sum_squares(params: Float64Array, x: Buffers): number;
  /** out = x · coef over dense f32 ranges (params: n, offset x, offset out, coef). */
  nt_scale(params: Float64Array, x: Buffers, out: Buffers): number;
  nt_causal_conv_update(params: Float64Array, state: Buffers, x: Buffers, w: Buffers, bias: Buffers, out: Buffers): number;
  nt_attention_backward(
    params: Float64Array,
    ...buffers: [...AttentionInputs, dout: Buffers, out: Buffers, lse: Buffers, dq: Buffers, dk: Buffers, dv: Buffers]
  ): number;
  nt_attention(params: Float64Array, ...buffers: [...AttentionInputs, out: Buffers, lse: Buffers]): number;
  /** One whole decode step from a pointer table (native/decode.c); 0 when it ran. */
  nt_decode_step(table: Float64Array): number;
  nt_decode_scratch_floats(table: Float64Array, threads: number): number;
  nt_moe_route(params: Float64Array, logits: Buffers, bias: Buffers, weights: Buffers, indices: Buffers): number;
  nt_moe_route_backward(params: Float64Array, logits: Buffers, indices: Buffers, grad: Buffers, out: Buffers): number;
  /** 0; 1 + the first (token·k + slot) routed outside [0, E); -1 out of memory. */
  nt_moe_experts(params: Float64Array, ...buffers: [...ExpertInputs, out: Buffers]): number;
  nt_moe_experts_backward(
    params: Float64Array,
    ...buffers: [...ExpertInputs, grad: Buffers, gx: Buffers, gw: Buffers, gUp: Buffers, gDown: Buffers, gUpBias: Buffers, gDownBias: Buffers]
  ): number;
  nt_stream_read(x: Buffers, n: number): number;
  nt_stream_copy(dst: Buffers, src: Buffers, n: number): void;
  /** Rounds of register-only multiply-adds on every thread; returns the floating-point operations done. */
  nt_fma_peak(iters: number): number;
}

export class NativeKernels {
  constructor(
    readonly symbols: NativeSymbols,
    /** ISA features the library was compiled for, e.g. ['avx2', 'fma']. */
    readonly features: readonly string[],
    /** Threads this JS thread's kernels use (each Bun Worker sets its own: {@link setThreads}). */
    public threads: number,
    readonly path: string,
    /** The BLAS that f32 products use, or null (our kernels only). */
    readonly blas: string | null,
    /** The address of a host buffer's first byte (for pointer tables such as the decode step's). */
    readonly addressOf: (buffer: ArrayBuffer) => number,
  ) {}

  /** Sets the threads of the kernels this JS thread (main or Worker) runs; returns the count in effect. */
  setThreads(n: number): number {
    if (!Number.isInteger(n) || n < 1) throw new Error(`native threads must be a positive integer, got ${n}`);
    this.threads = this.symbols.nt_set_threads(n);
    return this.threads;
  }

  /** e.g. `native (avx2 fma, 2 threads, f32 GEMM: libopenblas.so.0)`. */
  describe(): string {
    const blas = this.blas ? `, f32 GEMM: ${this.blas}` : '';
    return `native (${this.features.join(' ') || 'scalar'}, ${this.threads} thread${this.threads === 1 ? '' : 's'}${blas})`;
  }
}

let loaded: NativeKernels | null | undefined;
let failure: string | null = null;

/** More threads than any host we run on has; beyond it a value is a typo, not a setting. */
const MAX_THREADS = 1024;

function threadCount(): number {
  const raw = process.env.NEMOTRON_THREADS;
  const cpus = availableParallelism();
  if (raw === undefined || raw === '') return cpus;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`NEMOTRON_THREADS must be a positive integer, got '${raw}'`);
  if (n > MAX_THREADS) throw new Error(`NEMOTRON_THREADS must be at most ${MAX_THREADS}, got '${raw}' (this process may use ${cpus} CPUs)`);
  // Threads beyond the CPUs take turns at every barrier: on 2 CPUs decode ran 4× slower with 8
  // threads and 20× slower with 64. Said once, from the main thread (Workers load their own copy).
  if (n > cpus && isMainThread) {
    console.warn(
      `nemotron-ts: NEMOTRON_THREADS=${n} is more than the ${cpus} CPUs this process may use; the extra threads wait on each other and every kernel slows down (unset it to use ${cpus})`,
    );
  }
  return n;
}

function featureNames(bits: number): string[] {
  return FEATURE_NAMES.filter(([bit]) => bits & bit).map(([, name]) => name);
}

function load(): NativeKernels | null {
  if (!process.versions.bun) {
    failure = 'native kernels need Bun (bun:ffi)';
    return null;
  }
  const threads = threadCount();
  const build = buildNativeLibrary();
  if (!build.ok) {
    failure = build.error;
    return null;
  }
  // bun:ffi is Bun-only; required lazily so importing this module under Node stays harmless.
  const { dlopen, ptr } = require('bun:ffi') as typeof import('bun:ffi');
  preferSleepingThreads(dlopen);
  let lib: ReturnType<typeof dlopen<typeof SYMBOLS>>;
  try {
    lib = dlopen(build.path, SYMBOLS);
  } catch (e) {
    failure = `could not load ${build.path}: ${(e as Error).message}`;
    return null;
  }
  const compiled = lib.symbols.nt_compiled_features();
  const cpu = lib.symbols.nt_cpu_features();
  if ((compiled & cpu) !== compiled) {
    lib.close();
    failure = `${build.path} was built for ${featureNames(compiled).join(' ')} but this CPU has ${featureNames(cpu).join(' ') || 'none of them'}: delete ${build.path} to rebuild it for this CPU`;
    return null;
  }
  const chosenBlas = process.env.NEMOTRON_BLAS;
  const blasName = chosenBlas || 'libopenblas.so.0';
  const blas = blasName !== 'none' && lib.symbols.nt_load_blas(Buffer.from(`${blasName}\0`)) === 1 ? blasName : null;
  // The distro's OpenBLAS is optional; a library the user named is not, so its absence is said.
  if (chosenBlas && chosenBlas !== 'none' && !blas)
    console.warn(`nemotron-ts: NEMOTRON_BLAS='${chosenBlas}' could not be opened or has no cblas_sgemm/cblas_sgemv; GEMMs run on the built-in kernels`);
  const effective = lib.symbols.nt_set_threads(threads);
  const symbols = lib.symbols as unknown as NativeSymbols;
  return new NativeKernels(opProfiling ? timedSymbols(symbols) : symbols, featureNames(compiled), effective, build.path, blas, (buffer) => ptr(buffer));
}

/** The symbols, each call timed as an op-profile span (NEMOTRON_PROFILE_OPS=1). */
function timedSymbols(symbols: NativeSymbols): NativeSymbols {
  const timed: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(symbols) as [string, (...args: unknown[]) => unknown][]) {
    timed[name] = (...args: unknown[]) => profileSpan(nativeRowName(name), () => fn(...args));
  }
  return timed as unknown as NativeSymbols;
}

/**
 * Worker threads that sleep between kernels instead of spinning (unless the user chose otherwise).
 * libgomp spins by default and OpenBLAS's workers spin ~0.1 s after each GEMM; either keeps a core
 * busy that the next kernel's other thread needs. Measured: with OMP_WAIT_POLICY=passive decode ran
 * 3–6× faster on a shared 2-core machine; with OPENBLAS_THREAD_TIMEOUT=4 (2^4 cycles) bench-small
 * prefill went 1156 → 1400 tokens/s and decode 120 → 130 on a quiet one (Zen 3, 2026-12-07). Both
 * libraries read their variable when they load (after this), and Bun's process.env does not reach
 * the C environment, so the variables are set through libc.
 */
function preferSleepingThreads(dlopen: typeof import('bun:ffi').dlopen): void {
  const settings: [string, string, boolean][] = [
    ['OMP_WAIT_POLICY', 'passive', process.env.OMP_WAIT_POLICY === undefined && process.env.GOMP_SPINCOUNT === undefined],
    ['OPENBLAS_THREAD_TIMEOUT', '4', process.env.OPENBLAS_THREAD_TIMEOUT === undefined],
  ];
  const wanted = settings.filter(([, , unset]) => unset);
  if (wanted.length === 0) return;
  const libc = dlopen('libc.so.6', { setenv: { args: ['cstring', 'cstring', 'i32'], returns: 'i32' } });
  try {
    for (const [name, value] of wanted) {
      process.env[name] = value;
      libc.symbols.setenv(Buffer.from(`${name}\0`), Buffer.from(`${value}\0`), 0);
    }
  } finally {
    libc.close();
  }
}

/** The native kernels, loaded (and built when missing) on first use; null when unavailable. */
export function nativeKernels(): NativeKernels | null {
  if (loaded === undefined) loaded = load();
  return loaded;
}

/** Why {@link nativeKernels} returned null (null when it did not). */
export function nativeUnavailableReason(): string | null {
  nativeKernels();
  return failure;
}
