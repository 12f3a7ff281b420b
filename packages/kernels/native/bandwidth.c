/* STREAM-like probes for the benchmarks: the memory bandwidth ceiling decode is measured against. */
#include "native.h"

/* Sums n floats (a read stream, split across the threads); returns the sum so it is not elided. */
EXPORT float nt_stream_read(const float *x, double n_) {
  int64_t n = (int64_t)n_;
  float total = 0.0f;
#pragma omp parallel reduction(+ : total)
  {
    vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n / (4 * VLEN); i++) {
      const float *p = x + i * 4 * VLEN;
      s0 += vload(p); s1 += vload(p + VLEN); s2 += vload(p + 2 * VLEN); s3 += vload(p + 3 * VLEN);
    }
    total += vsum(s0 + s1 + s2 + s3);
  }
  return total;
}

/* dst = src over n floats (a copy stream: one read and one write per element). */
EXPORT void nt_stream_copy(float *dst, const float *src, double n_) {
  int64_t n = (int64_t)n_;
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

/*
 * The cores' multiply-add peak: each thread runs `iters` rounds of 12 independent vector FMA chains
 * (more than latency × pipes on current x86 and Arm cores), on registers only. Returns the
 * floating-point operations done (2 per lane per FMA, all threads), the ceiling every GEMM rate is
 * measured against.
 */
static volatile float fma_sink;
EXPORT double nt_fma_peak(double iters_) {
  int64_t iters = (int64_t)iters_;
  double flops = 0.0;
#pragma omp parallel reduction(+ : flops)
  {
    vf a[12], m = vbroadcast(0.999999f), c = vbroadcast(1e-7f);
    for (int i = 0; i < 12; i++) a[i] = vbroadcast((float)(i + omp_thread_id()));
    for (int64_t r = 0; r < iters; r++) {
#pragma GCC unroll 12
      for (int i = 0; i < 12; i++) a[i] = a[i] * m + c;
    }
    vf s = a[0];
    for (int i = 1; i < 12; i++) s += a[i];
    fma_sink = vsum(s);
    flops += (double)iters * 12 * VLEN * 2;
  }
  return flops;
}
