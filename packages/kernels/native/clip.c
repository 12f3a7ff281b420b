/* Gradient-norm clipping over dense f32 gradients: the sum of squares (f64, as the reference) and the scaled copy. */
#include "native.h"

/* params: n, offset. Returns Σ x² accumulated in f64. */
EXPORT double nt_sum_squares(const double *params, const float *x) {
  int64_t n = (int64_t)params[0];
  x += (int64_t)params[1];
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if (n >= PARALLEL_MIN_WORK)
  for (int64_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
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
