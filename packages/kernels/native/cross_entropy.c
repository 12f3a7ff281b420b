/*
 * Fused cross-entropy over rows of logits (f32 or bf16) against i32 labels, f32 math with a
 * vectorised exp: the forward keeps only each row's log-sum-exp and loss; the backward recomputes
 * softmax − onehot from the logits and the log-sum-exp. Rows are split across threads. Labels were
 * checked against [0, classes) by the caller (they are on the host).
 */
#include "native.h"

#include <math.h>
#include <stdlib.h>

/* Lane-wise m ? a : b for a comparison mask m (C has no vector ?:). */
static inline vf vselect(vi m, vf a, vf b) {
  vi ai, bi, r;
  memcpy(&ai, &a, sizeof ai);
  memcpy(&bi, &b, sizeof bi);
  r = (ai & m) | (bi & ~m);
  vf out;
  memcpy(&out, &r, sizeof out);
  return out;
}

/* exp(x) for each lane, within ~2 ulp: 2^n · p(r) with x = n·ln2 + r, |r| ≤ ln2/2 (Cephes' polynomial). */
static inline vf vexp(vf x) {
  const vf hi = vbroadcast(88.3762626647949f), lo = vbroadcast(-103.972639f);
  vf xc = vselect(x < hi, x, hi);
  xc = vselect(xc > lo, xc, lo);
  vf n = xc * vbroadcast(1.44269504088896341f);
  /* round to nearest: add and subtract 1.5·2^23 */
  const vf magic = vbroadcast(12582912.0f);
  n = (n + magic) - magic;
  vf r = xc - n * vbroadcast(0.693359375f);
  r = r - n * vbroadcast(-2.12194440e-4f);
  vf p = vbroadcast(1.9875691500e-4f);
  p = p * r + vbroadcast(1.3981999507e-3f);
  p = p * r + vbroadcast(8.3334519073e-3f);
  p = p * r + vbroadcast(4.1665795894e-2f);
  p = p * r + vbroadcast(1.6666665459e-1f);
  p = p * r + vbroadcast(5.0000001201e-1f);
  p = p * r * r + r + vbroadcast(1.0f);
  /* 2^n in two factors so n down to -150 (denormal results) stays exact */
  vi ni = __builtin_convertvector(n, vi);
  vi half = ni >> 1;
  vi e1 = (half + 127) << 23, e2 = (ni - half + 127) << 23;
  vf s1, s2;
  memcpy(&s1, &e1, sizeof s1);
  memcpy(&s2, &e2, sizeof s2);
  vf out = p * s1 * s2;
  /* x above the clamp is +inf, below it 0, NaN stays NaN (the clamps above turned it into a number) */
  vf inf = vbroadcast(INFINITY), zero = {0};
  out = vselect(x > hi, inf, out);
  out = vselect(x < lo, zero, out);
  return vselect(x != x, x, out);
}

/* One row of logits as f32: a pointer into f32 data, or widened from bf16 into `buf`. */
static const float *row_f32(const void *data, int dtype, int64_t base, int64_t n, float *buf) {
  if (dtype == DT_F32) return (const float *)data + base;
  const uint16_t *h = (const uint16_t *)data + base;
  for (int64_t c = 0; c < n; c++) buf[c] = bf16_to_f32(h[c]);
  return buf;
}

/* max and log Σ exp(x − max) of one row; NaN anywhere gives NaN. */
static void row_max_log_sum(const float *x, int64_t n, float *max_out, float *log_sum_out) {
  vf vmax = vbroadcast(-INFINITY);
  int nan = 0;
  int64_t c = 0;
  for (; c + VLEN <= n; c += VLEN) {
    vf v = vload(x + c);
    vmax = vselect(v > vmax, v, vmax);
  }
  float max = -INFINITY;
  for (int i = 0; i < VLEN; i++) max = vmax[i] > max ? vmax[i] : max;
  for (; c < n; c++) max = x[c] > max ? x[c] : max;
  for (c = 0; c < n; c++) nan |= x[c] != x[c];
  if (nan) {
    *max_out = NAN;
    *log_sum_out = NAN;
    return;
  }
  vf vmx = vbroadcast(max), acc = {0};
  c = 0;
  if (max != -INFINITY)
    for (; c + VLEN <= n; c += VLEN) acc += vexp(vload(x + c) - vmx);
  float sum = vsum(acc);
  for (; c < n; c++) sum += expf(x[c] - max);
  *max_out = max;
  *log_sum_out = logf(sum);
}

/* params: rows, classes, ignore_index, logits dtype, logits offset, labels offset, lse offset, loss offset. */
EXPORT int nt_cross_entropy(const double *params, const void *logits, const int32_t *labels, float *lse, float *loss) {
  int64_t rows = (int64_t)params[0], classes = (int64_t)params[1];
  int32_t ignore = (int32_t)params[2];
  int dtype = (int)params[3];
  int64_t loff = (int64_t)params[4];
  labels += (int64_t)params[5];
  lse += (int64_t)params[6];
  loss += (int64_t)params[7];
  int failed = 0;
#pragma omp parallel if (rows * classes >= PARALLEL_MIN_WORK)
  {
    float *buf = dtype == DT_F32 ? NULL : malloc(sizeof(float) * (size_t)classes);
    if (dtype != DT_F32 && !buf) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
      if (failed) continue;
      const float *x = row_f32(logits, dtype, loff + i * classes, classes, buf);
      float max, log_sum;
      row_max_log_sum(x, classes, &max, &log_sum);
      lse[i] = max + log_sum;
      loss[i] = labels[i] == ignore ? 0.0f : max - x[labels[i]] + log_sum;
    }
    free(buf);
  }
  return failed ? -1 : 0;
}

/*
 * dx = (softmax − onehot) · scale, 0 on ignored rows.
 * params: rows, classes, ignore_index, logits dtype, logits offset, labels offset, lse offset,
 *   scale offset, per-row scale (0/1), dx offset.
 */
EXPORT int nt_cross_entropy_backward(const double *params, const void *logits, const int32_t *labels, const float *lse, const float *scale, float *dx) {
  int64_t rows = (int64_t)params[0], classes = (int64_t)params[1];
  int32_t ignore = (int32_t)params[2];
  int dtype = (int)params[3];
  int64_t loff = (int64_t)params[4];
  labels += (int64_t)params[5];
  lse += (int64_t)params[6];
  scale += (int64_t)params[7];
  int per_row = (int)params[8];
  dx += (int64_t)params[9];
  int failed = 0;
#pragma omp parallel if (rows * classes >= PARALLEL_MIN_WORK)
  {
    float *buf = dtype == DT_F32 ? NULL : malloc(sizeof(float) * (size_t)classes);
    if (dtype != DT_F32 && !buf) {
#pragma omp atomic write
      failed = 1;
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
      if (failed) continue;
      float *d = dx + i * classes;
      int32_t label = labels[i];
      if (label == ignore) {
        memset(d, 0, sizeof(float) * (size_t)classes);
        continue;
      }
      const float *x = row_f32(logits, dtype, loff + i * classes, classes, buf);
      float m = lse[i], g = scale[per_row ? i : 0];
      vf vm = vbroadcast(m), vg = vbroadcast(g);
      int64_t c = 0;
      for (; c + VLEN <= classes; c += VLEN) vstore(d + c, vexp(vload(x + c) - vm) * vg);
      for (; c < classes; c++) d[c] = expf(x[c] - m) * g;
      d[label] = (expf(x[label] - m) - 1.0f) * g;
    }
    free(buf);
  }
  return failed ? -1 : 0;
}
