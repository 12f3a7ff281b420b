/*
 * Mamba2 SSM: the scan over a sequence (prefill) and the one-token state update (decode), f32,
 * dense operands. One thread owns one (batch, head) pair for the whole sequence, so its state
 * (P×N floats, 32 KiB for 64×128) stays in L1 while tokens stream through; the state dimension is
 * the vector dimension.
 *   S_t = exp(dt_t·A_h)·S_{t-1} + dt_t · x_t ⊗ B_t[g(h)],   y_t = S_t · C_t[g(h)] + D_h · x_t
 */
#include "native.h"

#include <math.h>
#include <stdlib.h>

static inline float readf(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* s[n] = decay·s[n] + k·b[n] over n, returning Σ s[n]·c[n]. */
static inline float update_row(float *restrict s, const float *restrict b, const float *restrict c, float decay, float k, int64_t n) {
  vf acc = {0};
  vf vd = vbroadcast(decay), vk = vbroadcast(k);
  int64_t i = 0;
  for (; i + VLEN <= n; i += VLEN) {
    vf v = vd * vload(s + i) + vk * vload(b + i);
    vstore(s + i, v);
    acc += v * vload(c + i);
  }
  float r = vsum(acc);
  for (; i < n; i++) {
    s[i] = decay * s[i] + k * b[i];
    r += s[i] * c[i];
  }
  return r;
}

/*
 * Four consecutive tokens on one state row: s is read and written once for the four updates (the
 * row stays in a register), where four update_row calls would stream it four times. Each token's
 * arithmetic and sum order is update_row's, so the results are the same bits.
 */
static inline void update_row4(float *restrict s, const float *const *b, const float *const *c, const float *decay, const float *k, int64_t n,
                               float *out) {
  vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  vf d0 = vbroadcast(decay[0]), d1 = vbroadcast(decay[1]), d2 = vbroadcast(decay[2]), d3 = vbroadcast(decay[3]);
  vf k0 = vbroadcast(k[0]), k1 = vbroadcast(k[1]), k2 = vbroadcast(k[2]), k3 = vbroadcast(k[3]);
  int64_t i = 0;
  for (; i + VLEN <= n; i += VLEN) {
    vf v = vload(s + i);
    v = d0 * v + k0 * vload(b[0] + i);
    a0 += v * vload(c[0] + i);
    v = d1 * v + k1 * vload(b[1] + i);
    a1 += v * vload(c[1] + i);
    v = d2 * v + k2 * vload(b[2] + i);
    a2 += v * vload(c[2] + i);
    v = d3 * v + k3 * vload(b[3] + i);
    a3 += v * vload(c[3] + i);
    vstore(s + i, v);
  }
  float r[4] = {vsum(a0), vsum(a1), vsum(a2), vsum(a3)};
  for (; i < n; i++) {
    float v = s[i];
    for (int t = 0; t < 4; t++) {
      v = decay[t] * v + k[t] * b[t][i];
      r[t] += v * c[t][i];
    }
    s[i] = v;
  }
  for (int t = 0; t < 4; t++) out[t] = r[t];
}

/*
 * params: batch, length, heads, head_dim, groups, state_dim,
 *   offsets x, dt, A, B, C, D, init, seq, y, final, dtypes A, D, has D, has init, has seq.
 */
EXPORT int nt_ssd_scan(const double *params, const float *x, const float *dt, const void *A, const float *B, const float *C, const void *D,
                       const float *init, const int32_t *seq, float *y, float *final_state) {
  int64_t batch = (int64_t)params[0], length = (int64_t)params[1], heads = (int64_t)params[2], hd = (int64_t)params[3];
  int64_t groups = (int64_t)params[4], sd = (int64_t)params[5];
  x += (int64_t)params[6];
  dt += (int64_t)params[7];
  int64_t a_off = (int64_t)params[8];
  B += (int64_t)params[9];
  C += (int64_t)params[10];
  int64_t d_off = (int64_t)params[11];
  int64_t init_off = (int64_t)params[12], seq_off = (int64_t)params[13];
  y += (int64_t)params[14];
  final_state += (int64_t)params[15];
  int a_dt = (int)params[16], d_dt = (int)params[17], has_d = (int)params[18], has_init = (int)params[19], has_seq = (int)params[20];
  int64_t hpg = heads / groups;
#pragma omp parallel for schedule(dynamic, 1) collapse(2) if (batch * heads * length * hd * sd >= PARALLEL_MIN_WORK)
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t h = 0; h < heads; h++) {
      float *S = final_state + (b * heads + h) * hd * sd;
      if (has_init) memcpy(S, init + init_off + (b * heads + h) * hd * sd, sizeof(float) * (size_t)(hd * sd));
      else memset(S, 0, sizeof(float) * (size_t)(hd * sd));
      float a = readf(A, a_dt, a_off + h), dh = has_d ? readf(D, d_dt, d_off + h) : 0.0f;
      int64_t g = h / hpg;
      const int32_t *ids = seq + seq_off + b * length;
      for (int64_t t = 0; t < length; t++) {
        if (has_seq && t > 0 && ids[t] != ids[t - 1]) memset(S, 0, sizeof(float) * (size_t)(hd * sd));
        /* Four tokens at once when no document starts inside them. */
        if (t + 4 <= length && (!has_seq || (ids[t + 1] == ids[t] && ids[t + 2] == ids[t] && ids[t + 3] == ids[t]))) {
          const float *bv[4], *cv[4], *xv[4];
          float decay[4], step[4], kx[4], yo[4];
          for (int q = 0; q < 4; q++) {
            int64_t bt = b * length + t + q;
            step[q] = dt[bt * heads + h];
            decay[q] = expf(step[q] * a);
            bv[q] = B + (bt * groups + g) * sd;
            cv[q] = C + (bt * groups + g) * sd;
            xv[q] = x + (bt * heads + h) * hd;
          }
          for (int64_t p = 0; p < hd; p++) {
            for (int q = 0; q < 4; q++) kx[q] = step[q] * xv[q][p];
            update_row4(S + p * sd, bv, cv, decay, kx, sd, yo);
            for (int q = 0; q < 4; q++) y[((b * length + t + q) * heads + h) * hd + p] = yo[q] + dh * xv[q][p];
          }
          t += 3;
          continue;
        }
        int64_t bt = b * length + t;
        float step = dt[bt * heads + h];
        float decay = expf(step * a);
        const float *bv = B + (bt * groups + g) * sd, *cv = C + (bt * groups + g) * sd;
        const float *xv = x + (bt * heads + h) * hd;
        float *yv = y + (bt * heads + h) * hd;
        for (int64_t p = 0; p < hd; p++) yv[p] = update_row(S + p * sd, bv, cv, decay, step * xv[p], sd) + dh * xv[p];
      }
    }
  }
  return 0;
}

static inline float softplusf(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/*
 * One decode step on state [B, H, P, N] in place; y [B, H, P].
 * params: batch, heads, head_dim, groups, state_dim, offsets state, x, dt, A, B, C, D, bias, y,
 *   dtypes A, D, bias, has D, has bias, softplus, has limit, lo, hi, A is log.
 */
EXPORT int nt_state_update(const double *params, float *state, const float *x, const float *dt, const void *A, const float *B, const float *C,
                           const void *D, const void *bias, float *y) {
  int64_t batch = (int64_t)params[0], heads = (int64_t)params[1], hd = (int64_t)params[2], groups = (int64_t)params[3], sd = (int64_t)params[4];
  state += (int64_t)params[5];
  x += (int64_t)params[6];
  dt += (int64_t)params[7];
  int64_t a_off = (int64_t)params[8];
  B += (int64_t)params[9];
  C += (int64_t)params[10];
  int64_t d_off = (int64_t)params[11], bias_off = (int64_t)params[12];
  y += (int64_t)params[13];
  int a_dt = (int)params[14], d_dt = (int)params[15], bias_dt = (int)params[16];
  int has_d = (int)params[17], has_bias = (int)params[18], softplus = (int)params[19], has_limit = (int)params[20];
  float lo = (float)params[21], hi = (float)params[22];
  int a_is_log = (int)params[23];
  int64_t hpg = heads / groups;
#pragma omp parallel for schedule(static) collapse(2) if (batch * heads * hd * sd >= PARALLEL_MIN_WORK)
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t h = 0; h < heads; h++) {
      float step = dt[b * heads + h];
      if (has_bias) step += readf(bias, bias_dt, bias_off + h);
      if (softplus) step = softplusf(step);
      if (has_limit) step = fminf(fmaxf(step, lo), hi);
      float a = readf(A, a_dt, a_off + h);
      if (a_is_log) a = -expf(a);
      float decay = expf(step * a), dh = has_d ? readf(D, d_dt, d_off + h) : 0.0f;
      int64_t g = h / hpg;
      const float *bv = B + (b * groups + g) * sd, *cv = C + (b * groups + g) * sd;
      const float *xv = x + (b * heads + h) * hd;
      float *S = state + (b * heads + h) * hd * sd, *yv = y + (b * heads + h) * hd;
      for (int64_t p = 0; p < hd; p++) yv[p] = update_row(S + p * sd, bv, cv, decay, step * xv[p], sd) + dh * xv[p];
    }
  }
  return 0;
}
