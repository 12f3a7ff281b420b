// Native CPU kernel benchmarks, one JSON line each: the memory-bandwidth ceiling (STREAM-like read
// and copy over 256 MiB), the multiply-add peak of the threads (register-only FMAs), and the GEMM/GEMV shapes of bench-small (prefill 512 tokens, decode 1
// token) through `linear` with bf16 weights (our kernels) and f32 weights twice for the GEMM shapes:
// our kernels (`kernel: "own"`) and the distro's OpenBLAS when it loads (`apt-get install -y
// libopenblas0-pthread`), so both are compared on one machine in one run; then the GEMV of the
// whole-step decode kernel alone (`decode_gemv`), to set against the bandwidth ceiling.
// Usage: bun scripts/bench-native.ts   (NEMOTRON_THREADS sets the threads)
import { empty, getNativeDevice, linear, NativeDecodeStep, nativeUnavailableReason, noGrad, tensor, type Tensor } from '@nemotron-ts/kernels';

const device = getNativeDevice();
if (!device) {
  console.log(JSON.stringify({ bench: 'skipped', reason: nativeUnavailableReason() }));
  process.exit(0);
}
const lib = device.native!;
const deviceName = device.name;
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify({ ...o, threads: lib.threads, device: deviceName }));
const round = (v: number, d = 1) => Number(v.toFixed(d));

function best(run: () => void, minMs = 300): number {
  run();
  let bestMs = Infinity;
  const start = performance.now();
  let iters = 0;
  while (performance.now() - start < minMs || iters < 3) {
    const t0 = performance.now();
    run();
    bestMs = Math.min(bestMs, performance.now() - t0);
    iters++;
  }
  return bestMs;
}

// Bandwidth ceiling.
const n = 64 * 1024 * 1024;
const src = new Float32Array(n).fill(1);
const dst = new Float32Array(n);
const readMs = best(() => lib.symbols.nt_stream_read(src, n));
emit({ bench: 'stream_read', mib: 256, ms: round(readMs, 2), GBps: round((n * 4) / readMs / 1e6) });
const copyMs = best(() => lib.symbols.nt_stream_copy(dst, src, n));
emit({ bench: 'stream_copy', mib: 256, ms: round(copyMs, 2), GBps: round((n * 8) / copyMs / 1e6) });
// Compute ceiling: register-only multiply-adds on every thread (no GEMM can run faster).
let fmaFlops = 0;
const fmaMs = best(() => {
  fmaFlops = lib.symbols.nt_fma_peak(2e6);
});
emit({ bench: 'fma_peak', ms: round(fmaMs, 2), GFLOPs: round(fmaFlops / fmaMs / 1e6) });

// GEMM / GEMV through `linear` (the op the model calls), f32 and bf16 weights.
const shapes = [
  { what: 'prefill in_proj', m: 512, n: 2048, k: 512 },
  { what: 'prefill mlp up', m: 512, n: 2048, k: 512 },
  { what: 'prefill mlp down', m: 512, n: 512, k: 2048 },
  { what: 'prefill lm_head', m: 512, n: 16384, k: 512 },
  { what: 'decode mlp down', m: 1, n: 512, k: 2048 },
  { what: 'decode lm_head', m: 1, n: 16384, k: 512 },
  { what: 'decode 4096²', m: 1, n: 4096, k: 4096 },
];
const data = (len: number) => Float32Array.from({ length: len }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
noGrad(() => {
  for (const s of shapes) {
    for (const [dtype, kernel] of [
      ['f32', 'own'],
      ['f32', lib.blas],
      ['bf16', 'own'],
    ] as const) {
      // GEMV (≤ 8 rows) is always ours, BLAS or not (see packages/kernels/native/gemm.c).
      if (!kernel || (kernel !== 'own' && s.m <= 8)) continue;
      lib.symbols.nt_enable_blas(kernel === 'own' ? 0 : 1);
      const x = tensor(data(s.m * s.k), [s.m, s.k], { device });
      const w = tensor(data(s.n * s.k), [s.n, s.k], { device, dtype });
      let y: Tensor | null = null;
      const ms = best(() => {
        y?.dispose();
        y = linear(x, w);
      });
      const flops = 2 * s.m * s.n * s.k;
      const weightBytes = s.n * s.k * (dtype === 'bf16' ? 2 : 4);
      emit({
        bench: 'linear',
        what: s.what,
        m: s.m,
        n: s.n,
        k: s.k,
        weights: dtype,
        kernel,
        ms: round(ms, 3),
        GFLOPs: round(flops / ms / 1e6),
        weightGBps: round(weightBytes / ms / 1e6),
      });
      y!.dispose();
      x.dispose();
      w.dispose();
    }
  }
});

// The GEMV of generation's whole-step decode (native/decode.c) in isolation: a NativeDecodeStep with
// no layers runs norm_f and one product, lm_head-shaped and one too large for the L3 cache.
for (const [n, k] of [
  [16384, 512],
  [16384, 4096],
] as const) {
  for (const dtype of ['f32', 'bf16'] as const) {
    const w = tensor(data(n * k), [n, k], { device, dtype });
    const step = NativeDecodeStep.create(lib, {
      embedding: tensor(data(2 * k), [2, k], { device }),
      layers: [],
      normF: { weight: tensor(new Float32Array(k).fill(1), [k], { device }), eps: 1e-5 },
      lmHead: { weight: w, bias: null },
    });
    if (typeof step === 'string') throw new Error(step);
    const logits = empty([1, n], { device });
    const ms = best(() => step.run(1, 1, null, logits));
    emit({ bench: 'decode_gemv', n, k, weights: dtype, ms: round(ms, 3), weightGBps: round((n * k * (dtype === 'bf16' ? 2 : 4)) / ms / 1e6) });
    w.dispose();
    logits.dispose();
  }
}
