/* (Gated) group RMSNorm over dense rows, f32 math: v = x (or x·silu(z)), out = w ⊙ v / rms(v) per group. */
#include "native.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>

static inline float readf(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline vf vread(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? vload_bf16((const uint16_t *)p + i) : vload((const float *)p + i);
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
    /* v written into the output row first, then scaled in place; a vector at a time. */
    int64_t j = 0;
    for (; j + VLEN <= d; j += VLEN) {
      vf v = vread(x, x_dt, x_off + r * d + j);
      if (has_z) v *= vsilu(vread(z, z_dt, z_off + r * d + j));
      vstore(o + j, v);
    }
    for (; j < d; j++) {
      float v = readf(x, x_dt, x_off + r * d + j);
      if (has_z) {
        float zv = readf(z, z_dt, z_off + r * d + j);
        v *= zv / (1.0f + expf(-zv));
      }
      o[j] = v;
    }
    for (int64_t k = 0; k < groups; k++) {
      float *og = o + k * n;
      vf acc = {0};
      int64_t i = 0;
      for (; i + VLEN <= n; i += VLEN) acc += vload(og + i) * vload(og + i);
      float ss = vsum(acc);
      for (; i < n; i++) ss += og[i] * og[i];
      float rstd = 1.0f / sqrtf(ss / (float)n + eps);
      vf vr = vbroadcast(rstd);
      i = 0;
      for (; i + VLEN <= n; i += VLEN) vstore(og + i, vread(w, w_dt, w_off + k * n + i) * vload(og + i) * vr);
      for (; i < n; i++) og[i] = readf(w, w_dt, w_off + k * n + i) * og[i] * rstd;
    }
  }
  return 0;
}

/*
 * Backward of nt_norm from the upstream gradient g: dx (and dz when gated) per row, dw summed over
 * rows (per-thread partial sums in double, added after). Vector loops with scalar tails; each row
 * keeps v and, gated, sigmoid(z) from its first pass for the second.
 * params: as nt_norm's (offsets x, z, w, then g's offset in place of out's), then dtypes g;
 * outputs dense f32 from offset 0: dx [rows, d], dz [rows, d] (gated), dw [d].
 */
EXPORT int nt_norm_backward(const double *params, const void *x, const void *z, const void *w, const void *g, float *dx, float *dz, float *dw) {
  int64_t rows = (int64_t)params[0], d = (int64_t)params[1], groups = (int64_t)params[2];
  float eps = (float)params[3];
  int64_t x_off = (int64_t)params[4], z_off = (int64_t)params[5], w_off = (int64_t)params[6], g_off = (int64_t)params[7];
  int x_dt = (int)params[8], z_dt = (int)params[9], w_dt = (int)params[10], has_z = (int)params[11], g_dt = (int)params[12];
  int64_t n = d / groups;
  int threads = nt_threads();
  typedef double vd __attribute__((vector_size(VLEN * 8)));
  double *partial = calloc((size_t)(threads * d), sizeof(double));
  /* per thread: v and sigmoid(z) of the row; w widened to f32 once */
  float *vbuf = malloc(sizeof(float) * (size_t)(2 * threads * d + d));
  if (!partial || !vbuf) {
    free(partial);
    free(vbuf);
    return -1;
  }
  float *wf = vbuf + 2 * threads * d;
  for (int64_t j = 0; j < d; j++) wf[j] = readf(w, w_dt, w_off + j);
#pragma omp parallel num_threads(threads) if (rows > 1 && rows * d * 8 >= PARALLEL_MIN_WORK)
  {
    int tid = omp_thread_id();
    double *pw = partial + (int64_t)tid * d;
    float *v = vbuf + (int64_t)tid * 2 * d, *sig = v + d;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
      int64_t j = 0;
      for (; j + VLEN <= d; j += VLEN) {
        vf xv = vread(x, x_dt, x_off + r * d + j);
        if (has_z) {
          vf zv = vread(z, z_dt, z_off + r * d + j), sg = vsigmoid(zv);
          vstore(sig + j, sg);
          xv *= zv * sg;
        }
        vstore(v + j, xv);
      }
      for (; j < d; j++) {
        float xv = readf(x, x_dt, x_off + r * d + j);
        if (has_z) {
          float zv = readf(z, z_dt, z_off + r * d + j), sg = 1.0f / (1.0f + expf(-zv));
          sig[j] = sg;
          xv *= zv * sg;
        }
        v[j] = xv;
      }
      for (int64_t k = 0; k < groups; k++) {
        int64_t s = k * n, e0 = r * d + s;
        const float *vg = v + s, *wg = wf + s, *sgg = sig + s;
        vf a_ss = {0}, a_sgv = {0};
        int64_t i = 0;
        for (; i + VLEN <= n; i += VLEN) {
          vf vj = vload(vg + i);
          a_ss += vj * vj;
          a_sgv += vread(g, g_dt, g_off + e0 + i) * vload(wg + i) * vj;
        }
        float ss = vsum(a_ss), sgv = vsum(a_sgv);
        for (; i < n; i++) {
          ss += vg[i] * vg[i];
          sgv += readf(g, g_dt, g_off + e0 + i) * wg[i] * vg[i];
        }
        float rstd = 1.0f / sqrtf(ss / (float)n + eps);
        float c = rstd * rstd * rstd * sgv / (float)n;
        vf vr = vbroadcast(rstd), vc = vbroadcast(c), one = vbroadcast(1.0f);
        i = 0;
        for (; i + VLEN <= n; i += VLEN) {
          vf gj = vread(g, g_dt, g_off + e0 + i), vj = vload(vg + i);
          vf gv = gj * vj * vr;
          vd acc;
          memcpy(&acc, pw + s + i, sizeof acc);
          acc += __builtin_convertvector(gv, vd);
          memcpy(pw + s + i, &acc, sizeof acc);
          vf dv = vr * gj * vload(wg + i) - vj * vc;
          if (!has_z) {
            vstore(dx + e0 + i, dv);
            continue;
          }
          vf y = vread(x, x_dt, x_off + e0 + i), zv = vread(z, z_dt, z_off + e0 + i), sg = vload(sgg + i);
          vstore(dx + e0 + i, dv * zv * sg);
          vstore(dz + e0 + i, dv * y * sg * (one + zv * (one - sg)));
        }
        for (; i < n; i++) {
          int64_t e = e0 + i;
          float gj = readf(g, g_dt, g_off + e), vj = vg[i];
          pw[s + i] += (double)(gj * vj * rstd);
          float dv = rstd * gj * wg[i] - vj * c;
          if (!has_z) {
            dx[e] = dv;
            continue;
          }
          float y = readf(x, x_dt, x_off + e), zv = readf(z, z_dt, z_off + e), sg = sgg[i];
          dx[e] = dv * zv * sg;
          dz[e] = dv * y * sg * (1.0f + zv * (1.0f - sg));
        }
      }
    }
  }
  for (int64_t j = 0; j < d; j++) {
    double s = 0.0;
    for (int t = 0; t < threads; t++) s += partial[(int64_t)t * d + j];
    dw[j] = (float)s;
  }
  free(partial);
  free(vbuf);
  return 0;
}
