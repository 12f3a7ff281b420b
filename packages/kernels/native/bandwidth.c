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
