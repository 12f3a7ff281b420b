/* Depthwise causal conv1d of the Mamba2 mixer (prefill and the decode update), f32 activations. */
#include "native.h"

#include <math.h>
#include <stdlib.h>

static inline float readf(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static inline float siluf(float v) { return v / (1.0f + expf(-v)); }

/* x·sigmoid(x) over n contiguous floats, in place. */
static void silu_row(float *p, int64_t n) {
  int64_t i = 0;
  for (; i + VLEN <= n; i += VLEN) vstore(p + i, vsilu(vload(p + i)));
  for (; i < n; i++) p[i] = siluf(p[i]);
}

enum { CONV_BLOCK = 128 };

/*
 * y [B, L, C], final state [B, C, K]. A tap at position s reaches t only inside t's document
 * (seq ids; the first document also sees the initial state, whose last column is s = -1).
 * Work items are (batch, block of CONV_BLOCK channels), so one sequence splits across threads; a
 * block's weights are transposed to [K][channels] first so every tap is a contiguous vector FMA.
 * params: batch, length, channels, taps, offsets x, w, bias, init, seq, y, final,
 *   dtypes w, bias, has bias, has init, has seq, silu.
 */
EXPORT int nt_causal_conv(const double *params, const float *x, const void *w, const void *bias, const float *init, const int32_t *seq,
                          float *y, float *fin) {
  int64_t batch = (int64_t)params[0], length = (int64_t)params[1], ch = (int64_t)params[2], taps = (int64_t)params[3];
  x += (int64_t)params[4];
  int64_t w_off = (int64_t)params[5], b_off = (int64_t)params[6];
  init += (int64_t)params[7];
  seq += (int64_t)params[8];
  y += (int64_t)params[9];
  fin += (int64_t)params[10];
  int w_dt = (int)params[11], b_dt = (int)params[12], has_bias = (int)params[13], has_init = (int)params[14], has_seq = (int)params[15];
  int silu = (int)params[16];
  int64_t blocks = (ch + CONV_BLOCK - 1) / CONV_BLOCK;
  float *wt_all = malloc(sizeof(float) * (size_t)(taps * CONV_BLOCK * nt_threads() + 1));
  if (!wt_all) return -1;
#pragma omp parallel for schedule(dynamic, 1) if (batch * length * ch * taps >= PARALLEL_MIN_WORK)
  for (int64_t item = 0; item < batch * blocks; item++) {
    int64_t b = item / blocks, c0 = (item % blocks) * CONV_BLOCK;
    int64_t cn = ch - c0 < CONV_BLOCK ? ch - c0 : CONV_BLOCK;
    float *wt = wt_all + (int64_t)omp_thread_id() * taps * CONV_BLOCK;
    float bias_row[CONV_BLOCK];
    for (int64_t c = 0; c < cn; c++) {
      for (int64_t k = 0; k < taps; k++) wt[k * CONV_BLOCK + c] = readf(w, w_dt, w_off + (c0 + c) * taps + k);
      bias_row[c] = has_bias ? readf(bias, b_dt, b_off + c0 + c) : 0.0f;
    }
    int64_t start = INT64_MIN; /* first position of the current document; INT64_MIN: the first one */
    for (int64_t t = 0; t < length; t++) {
      if (has_seq && t > 0 && seq[b * length + t] != seq[b * length + t - 1]) start = t;
      float *restrict yr = y + (b * length + t) * ch + c0;
      for (int64_t c = 0; c < cn; c++) yr[c] = bias_row[c];
      for (int64_t k = 0; k < taps; k++) {
        int64_t s = t - (taps - 1) + k;
        if (s < start) continue;
        const float *restrict wk = wt + k * CONV_BLOCK;
        if (s >= 0) {
          const float *restrict xr = x + (b * length + s) * ch + c0;
          for (int64_t c = 0; c < cn; c++) yr[c] += wk[c] * xr[c];
        } else if (has_init) {
          for (int64_t c = 0; c < cn; c++) yr[c] += wk[c] * init[(b * ch + c0 + c) * taps + taps + s];
        }
      }
      if (silu) silu_row(yr, cn);
    }
    for (int64_t c = c0; c < c0 + cn; c++) {
      for (int64_t k = 0; k < taps; k++) {
        int64_t s = length - taps + k;
        float v = 0.0f;
        if (s >= start) v = s >= 0 ? x[(b * length + s) * ch + c] : has_init ? init[(b * ch + c) * taps + taps + s] : 0.0f;
        fin[(b * ch + c) * taps + k] = v;
      }
    }
  }
  free(wt_all);
  return 0;
}

/*
 * Decode: rolls state [B, C, K] left, appends x [B, C], out [B, C] = act(bias + Σ w·state).
 * params: batch, channels, taps, offsets state, x, w, bias, out, dtypes x, w, bias, has bias, silu.
 */
EXPORT int nt_causal_conv_update(const double *params, float *state, const void *x, const void *w, const void *bias, float *out) {
  int64_t batch = (int64_t)params[0], ch = (int64_t)params[1], taps = (int64_t)params[2];
  state += (int64_t)params[3];
  int64_t x_off = (int64_t)params[4], w_off = (int64_t)params[5], b_off = (int64_t)params[6];
  out += (int64_t)params[7];
  int x_dt = (int)params[8], w_dt = (int)params[9], b_dt = (int)params[10], has_bias = (int)params[11], silu = (int)params[12];
  for (int64_t b = 0; b < batch; b++) {
    for (int64_t c = 0; c < ch; c++) {
      float *row = state + (b * ch + c) * taps;
      for (int64_t k = 0; k < taps - 1; k++) row[k] = row[k + 1];
      row[taps - 1] = readf(x, x_dt, x_off + b * ch + c);
      float acc = has_bias ? readf(bias, b_dt, b_off + c) : 0.0f;
      for (int64_t k = 0; k < taps; k++) acc += readf(w, w_dt, w_off + c * taps + k) * row[k];
      out[b * ch + c] = silu ? siluf(acc) : acc;
    }
  }
  return 0;
}

/*
 * Backward of nt_causal_conv's y: dz = dy·act'(z) (z recomputed), then each tap that reached an
 * output sends dz·w to its input (x or the initial state) and dz·input to its weight. Serial: the
 * conv is a small share of a training step and its weight gradient sums over every position.
 * params: as nt_causal_conv's with dy's offset in place of y's (final's unused);
 * outputs dense f32 from offset 0: dx [B, L, C], dw [C, K], db [C] (or NULL), dinit [B, C, K] (or NULL).
 */
EXPORT int nt_causal_conv_backward(const double *params, const float *x, const void *w, const void *bias, const float *init, const int32_t *seq,
                                   const float *dy, float *dx, float *dw, float *db, float *dinit) {
  int64_t batch = (int64_t)params[0], length = (int64_t)params[1], ch = (int64_t)params[2], taps = (int64_t)params[3];
  x += (int64_t)params[4];
  int64_t w_off = (int64_t)params[5], b_off = (int64_t)params[6];
  init += (int64_t)params[7];
  seq += (int64_t)params[8];
  dy += (int64_t)params[9];
  int w_dt = (int)params[11], b_dt = (int)params[12], has_bias = (int)params[13], has_init = (int)params[14], has_seq = (int)params[15];
  int silu = (int)params[16];
  memset(dx, 0, sizeof(float) * (size_t)(batch * length * ch));
  memset(dw, 0, sizeof(float) * (size_t)(ch * taps));
  if (db) memset(db, 0, sizeof(float) * (size_t)ch);
  if (dinit) memset(dinit, 0, sizeof(float) * (size_t)(batch * ch * taps));
  for (int64_t b = 0; b < batch; b++) {
    int64_t start = INT64_MIN;
    for (int64_t t = 0; t < length; t++) {
      if (has_seq && t > 0 && seq[b * length + t] != seq[b * length + t - 1]) start = t;
      for (int64_t c = 0; c < ch; c++) {
        float dz = dy[(b * length + t) * ch + c];
        if (silu) {
          float z = has_bias ? readf(bias, b_dt, b_off + c) : 0.0f;
          for (int64_t k = 0; k < taps; k++) {
            int64_t s = t - (taps - 1) + k;
            if (s < start) continue;
            float in = s >= 0 ? x[(b * length + s) * ch + c] : has_init ? init[(b * ch + c) * taps + taps + s] : 0.0f;
            z += readf(w, w_dt, w_off + c * taps + k) * in;
          }
          float sg = 1.0f / (1.0f + expf(-z));
          dz *= sg * (1.0f + z * (1.0f - sg));
        }
        if (db) db[c] += dz;
        for (int64_t k = 0; k < taps; k++) {
          int64_t s = t - (taps - 1) + k;
          if (s < start) continue;
          float wk = readf(w, w_dt, w_off + c * taps + k);
          float in = s >= 0 ? x[(b * length + s) * ch + c] : has_init ? init[(b * ch + c) * taps + taps + s] : 0.0f;
          dw[c * taps + k] += dz * in;
          if (s >= 0) dx[(b * length + s) * ch + c] += dz * wk;
          else if (dinit) dinit[(b * ch + c) * taps + taps + s] += dz * wk;
        }
      }
    }
  }
  return 0;
}
