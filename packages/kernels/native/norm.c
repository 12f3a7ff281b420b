/* (Gated) group RMSNorm over dense rows, f32 math: v = x (or x·silu(z)), out = w ⊙ v / rms(v) per group. */
#include "native.h"

#include <math.h>

static inline float readf(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/*
 * params: rows, d, groups, eps, offsets x, z, w, out, dtypes x, z, w, has z.
 */
EXPORT int nt_norm(const double *params, const void *x, const void *z, const void *w, float *out) {
  int64_t rows = (int64_t)params[0], d = (int64_t)params[1], groups = (int64_t)params[2];
  float eps = (float)params[3];
  int64_t x_off = (int64_t)params[4], z_off = (int64_t)params[5], w_off = (int64_t)params[6], o_off = (int64_t)params[7];
  int x_dt = (int)params[8], z_dt = (int)params[9], w_dt = (int)params[10], has_z = (int)params[11];
  int64_t n = d / groups;
#pragma omp parallel for schedule(static) if (rows > 1 && rows * d * 4 >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < rows; r++) {
    float *o = out + o_off + r * d;
    /* v written into the output row first, then scaled in place. */
    for (int64_t j = 0; j < d; j++) {
      float v = readf(x, x_dt, x_off + r * d + j);
      if (has_z) {
        float zv = readf(z, z_dt, z_off + r * d + j);
        v *= zv / (1.0f + expf(-zv));
      }
      o[j] = v;
    }
    for (int64_t k = 0; k < groups; k++) {
      float *og = o + k * n;
      float ss = 0.0f;
      for (int64_t j = 0; j < n; j++) ss += og[j] * og[j];
      float rstd = 1.0f / sqrtf(ss / (float)n + eps);
      for (int64_t j = 0; j < n; j++) og[j] = readf(w, w_dt, w_off + k * n + j) * og[j] * rstd;
    }
  }
  return 0;
}
