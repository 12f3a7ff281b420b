/*
 * Mamba2 SSM: the scan over a sequence (prefill, chunked) and the one-token state update (decode),
 * f32, dense operands. The decode update: one thread owns one (batch, head) pair, its state row by
 * row with the state dimension as the vector dimension.
 *   S_t = exp(dt_t·A_h)·S_{t-1} + dt_t · x_t ⊗ B_t[g(h)],   y_t = S_t · C_t[g(h)] + D_h · x_t
 */
#include "native.h"
#include "ssd_chunk.h"
#include "ssm_update.h"
#include "tile_gemm.h"

#include <math.h>
#include <stdlib.h>

/*
 * params: batch, length, heads, head_dim, groups, state_dim,
 *   offsets x, dt, A, B, C, D, init, seq, y, final, dtypes A, D, has D, has init, has seq.
 *
 * Chunked (the SSD form, ssd_chunk.h): per chunk of Q positions,
 *   y_t = Σ_{s≤t} (C_t·B_s)·e^{cum_t − cum_s}·dt_s·x_s + e^{cum_t}·S_in·C_t + D·x_t
 *   S_out = e^{cum_end}·S_in + Σ_s e^{cum_end − cum_s}·dt_s·x_s ⊗ B_s,
 * four products of small tiles (tile_gemm.h), ~2·P·N + Q·N + Q·P multiply-adds per position and
 * head where the recurrence streams the P×N state through every position. One task per
 * (batch, head); its state is kept transposed (N×P) so both state products read it by rows.
 */
EXPORT int nt_ssd_scan(const double *params, const float *x, const float *dt, const void *A, const float *B, const float *C, const void *D,
                       const float *init, const int32_t *seq, float *y, float *final_state) {
  ssd_params q = ssd_read_params(params);
  int64_t batch = q.batch, length = q.length, heads = q.heads, hd = q.hd, groups = q.groups, sd = q.sd;
  int64_t a_off = q.a_off, d_off = q.d_off, init_off = q.init_off, seq_off = q.seq_off;
  int a_dt = q.a_dt, d_dt = q.d_dt, has_d = q.has_d, has_init = q.has_init, has_seq = q.has_seq;
  x += q.x_off, dt += q.dt_off, B += q.b_off, C += q.c_off, y += q.out_off, final_state += q.final_off;
  const int64_t Q = SSD_CHUNK, hpg = heads / groups, ps = hd * sd, sx = heads * hd, sb = groups * sd;
  const int64_t chunks = (length + Q - 1) / Q;
  int failed = 0;
#pragma omp parallel if (batch * heads > 1 && batch * heads * length * ps >= PARALLEL_MIN_WORK)
  {
    /* Per thread: the transposed state, the chunk's x (scaled for the state), B, C·e^{cum}, Bᵀ, M, y. */
    float *St = malloc(sizeof(float) * (size_t)ps), *Xw = malloc(sizeof(float) * (size_t)(Q * hd));
    float *Bk = malloc(sizeof(float) * (size_t)(Q * sd)), *Ce = malloc(sizeof(float) * (size_t)(Q * sd));
    float *Bt = malloc(sizeof(float) * (size_t)(Q * sd)), *M = malloc(sizeof(float) * (size_t)(Q * Q));
    float *Xk = malloc(sizeof(float) * (size_t)(Q * hd)), *Yk = malloc(sizeof(float) * (size_t)(Q * hd));
    float *Ck = malloc(sizeof(float) * (size_t)(Q * sd));
    if (!St || !Xw || !Bk || !Ce || !Bt || !M || !Xk || !Yk || !Ck) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < batch; b++) {
      for (int64_t h = 0; h < heads; h++) {
        int stop;
#pragma omp atomic read
        stop = failed;
        if (stop) continue;
        const int64_t bh = b * heads + h, g = h / hpg;
        const float a = read_param(A, a_dt, a_off + h), dh = has_d ? read_param(D, d_dt, d_off + h) : 0.0f;
        const float *xb = x + (b * length * heads + h) * hd, *Bb = B + (b * length * groups + g) * sd, *Cb = C + (b * length * groups + g) * sd;
        float *yb = y + (b * length * heads + h) * hd;
        const int32_t *ids = has_seq ? seq + seq_off + b * length : NULL;
        if (has_init) {
          const float *S0 = init + init_off + bh * ps;
          for (int64_t p = 0; p < hd; p++)
            for (int64_t n = 0; n < sd; n++) St[n * hd + p] = S0[p * sd + n];
        } else memset(St, 0, sizeof(float) * (size_t)ps);
        chunk_t ch;
        for (int64_t c = 0; c < chunks; c++) {
          chunk_setup(&ch, c, length, dt + b * length * heads + h, heads, a, ids);
          const int64_t q = ch.q, t0 = ch.t0;
          const int end = ch.seg[q - 1];
          gather_rows(Xk, xb + t0 * sx, sx, q, hd);
          gather_rows(Bk, Bb + t0 * sb, sb, q, sd);
          gather_rows(Ck, Cb + t0 * sb, sb, q, sd);
          for (int64_t i = 0; i < q; i++) {
            float e = ch.seg[i] == 0 ? expf((float)ch.cum[i]) : 0.0f;
            const float *cr = Ck + i * sd;
            for (int64_t n = 0; n < sd; n++) {
              Ce[i * sd + n] = e * cr[n];
              Bt[n * Q + i] = Bk[i * sd + n];
            }
          }
          /* M[t][s] = (C_t·B_s)·e^{cum_t − cum_s}·dt_s for s ≤ t in one document (from C, not Ce: e^{cum_t} may underflow). */
          tile_gemm(q, q, sd, Ck, sd, 1, Bt, Q, M, Q, 0);
          for (int64_t t = 0; t < q; t++) {
            float L[SSD_CHUNK];
            chunk_decay_row(&ch, t, L);
            for (int64_t s = 0; s < q; s++) M[t * Q + s] *= L[s] * ch.dt[s];
          }
          for (int64_t i = 0; i < q * hd; i++) Yk[i] = dh * Xk[i];
          tile_gemm(q, hd, q, M, Q, 1, Xk, hd, Yk, hd, 1);    /* y_t += Σ_s M[t][s]·x_s */
          if (ch.seg[0] == 0) tile_gemm(q, hd, sd, Ce, sd, 1, St, hd, Yk, hd, 1); /* y_t += e^{cum_t}·S_in·C_t */
          for (int64_t i = 0; i < q; i++) memcpy(yb + (t0 + i) * sx, Yk + i * hd, sizeof(float) * (size_t)hd);
          /* Sᵀ_out = e^{cum_end}·Sᵀ_in + Σ_s Bᵀ_s ⊗ (e^{cum_end − cum_s}·dt_s·x_s) */
          float fe = end == 0 ? expf((float)ch.cum[q - 1]) : 0.0f;
          if (fe != 1.0f)
            for (int64_t i = 0; i < ps; i++) St[i] *= fe;
          for (int64_t i = 0; i < q; i++) {
            float w = ch.seg[i] == end ? expf((float)(ch.cum[q - 1] - ch.cum[i])) * ch.dt[i] : 0.0f;
            for (int64_t p = 0; p < hd; p++) Xw[i * hd + p] = w * Xk[i * hd + p];
          }
          tile_gemm(sd, hd, q, Bk, 1, sd, Xw, hd, St, hd, 1);
        }
        float *Sf = final_state + bh * ps;
        for (int64_t p = 0; p < hd; p++)
          for (int64_t n = 0; n < sd; n++) Sf[p * sd + n] = St[n * hd + p];
      }
    }
    free(St), free(Xw), free(Bk), free(Ce), free(Bt), free(M), free(Xk), free(Yk), free(Ck);
  }
  return failed ? -1 : 0;
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
      if (has_bias) step += read_param(bias, bias_dt, bias_off + h);
      if (softplus) step = softplusf(step);
      if (has_limit) step = fminf(fmaxf(step, lo), hi);
      float a = read_param(A, a_dt, a_off + h);
      if (a_is_log) a = -expf(a);
      float decay = expf(step * a), dh = has_d ? read_param(D, d_dt, d_off + h) : 0.0f;
      int64_t g = h / hpg;
      const float *bv = B + (b * groups + g) * sd, *cv = C + (b * groups + g) * sd;
      const float *xv = x + (b * heads + h) * hd;
      float *S = state + (b * heads + h) * hd * sd, *yv = y + (b * heads + h) * hd;
      for (int64_t p = 0; p < hd; p++) yv[p] = ssm_update_row(S + p * sd, bv, cv, decay, step * xv[p], sd) + dh * xv[p];
    }
  }
  return 0;
}
