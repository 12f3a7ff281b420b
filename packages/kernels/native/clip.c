/* Gradient-norm clipping over dense f32 gradients: the sum of squares (f64, as the reference) and the scaled copy. */
#include "native.h"

/* params: n, offset. Returns Σ x² accumulated in f64. */
EXPORT double nt_sum_squares(const double *params, const float *x) {
  int64_t n = (int64_t)params[0];
  x += (int64_t)params[1];
  /* f64 lanes (eight floats widened per step): the reference's f64 sum, vectorised. */
  typedef float f4 __attribute__((vector_size(16), aligned(4)));
  typedef double d4 __attribute__((vector_size(32)));
  int64_t pairs = n / 8;
  double total = 0.0;
#pragma omp parallel reduction(+ : total) if (n >= PARALLEL_MIN_WORK)
  {
    d4 acc0 = {0}, acc1 = {0};
#pragma omp for schedule(static)
    for (int64_t q = 0; q < pairs; q++) {
      d4 v0 = __builtin_convertvector(*(const f4 *)(x + 8 * q), d4), v1 = __builtin_convertvector(*(const f4 *)(x + 8 * q + 4), d4);
      acc0 += v0 * v0;
      acc1 += v1 * v1;
    }
    d4 acc = acc0 + acc1;
    total += acc[0] + acc[1] + acc[2] + acc[3];
  }
  for (int64_t i = pairs * 8; i < n; i++) total += (double)x[i] * (double)x[i];
  return total;
}

/* params: n, offset x, offset out, coef. out = x · coef. */
EXPORT int nt_scale(const double *params, const float *x, float *out) {
  int64_t n = (int64_t)params[0];
  x += (int64_t)params[1];
  out += (int64_t)params[2];
  float coef = (float)params[3];
#pragma omp parallel for schedule(static) if (n >= PARALLEL_MIN_WORK)
  for (int64_t i = 0; i < n; i++) out[i] = x[i] * coef;
  return 0;
}
