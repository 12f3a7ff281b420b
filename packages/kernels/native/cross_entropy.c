/*
 * Fused cross-entropy over rows of logits (f32 or bf16) against i32 labels, f32 math with a
 * vectorised exp: the forward keeps only each row's log-sum-exp and loss; the backward recomputes
 * softmax − onehot from the logits and the log-sum-exp. Rows are split across threads. Labels were
 * checked against [0, classes) by the caller (they are on the host).
 */
#include "native.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>

/* One row of logits as f32: a pointer into f32 data, or widened from bf16 into `buf`. */
static const float *row_f32(const void *data, int dtype, int64_t base, int64_t n, float *buf) {
  if (dtype == DT_F32) return (const float *)data + base;
  const uint16_t *h = (const uint16_t *)data + base;
  for (int64_t c = 0; c < n; c++) buf[c] = bf16_to_f32(h[c]);
  return buf;
}

/*
 * The params (f64) both entry points start with: 0 rows, 1 classes, 2 ignore_index, 3 logits dtype,
 * 4 logits offset, 5 labels offset, 6 lse offset (offsets in elements). What follows slot 6 differs
 * between the two and is read there.
 */
typedef struct {
  int64_t rows, classes, logits_off, labels_off, lse_off;
  int32_t ignore;
  int dtype;
} ce_params;

static ce_params ce_read_params(const double *p) {
  return (ce_params){(int64_t)p[0], (int64_t)p[1], (int64_t)p[4], (int64_t)p[5], (int64_t)p[6], (int32_t)p[2], (int)p[3]};
}

/*
 * A thread's buffer for one row widened from bf16 (NULL for f32 logits, read in place). Called inside
 * the parallel region; a failed allocation sets *failed, and the threads skip their rows.
 */
static float *row_buffer(int dtype, int64_t classes, int *failed) {
  if (dtype == DT_F32) return NULL;
  float *buf = malloc(sizeof(float) * (size_t)classes);
  if (!buf) {
#pragma omp atomic write
    *failed = 1;
  }
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

/* params: ce_params (slots 0–6), then 7 loss offset. */
EXPORT int nt_cross_entropy(const double *params, const void *logits, const int32_t *labels, float *lse, float *loss) {
  ce_params p = ce_read_params(params);
  int64_t rows = p.rows, classes = p.classes;
  labels += p.labels_off;
  lse += p.lse_off;
  loss += (int64_t)params[7];
  int failed = 0;
#pragma omp parallel if (rows * classes >= PARALLEL_MIN_WORK)
  {
    float *buf = row_buffer(p.dtype, classes, &failed);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
      if (failed) continue;
      const float *x = row_f32(logits, p.dtype, p.logits_off + i * classes, classes, buf);
      float max, log_sum;
      row_max_log_sum(x, classes, &max, &log_sum);
      lse[i] = max + log_sum;
      loss[i] = labels[i] == p.ignore ? 0.0f : max - x[labels[i]] + log_sum;
    }
    free(buf);
  }
  return failed ? -1 : 0;
}

/*
 * dx = (softmax − onehot) · scale, 0 on ignored rows.
 * params: ce_params (slots 0–6), then 7 scale offset, 8 per-row scale (0/1), 9 dx offset.
 */
EXPORT int nt_cross_entropy_backward(const double *params, const void *logits, const int32_t *labels, const float *lse, const float *scale, float *dx) {
  ce_params p = ce_read_params(params);
  int64_t rows = p.rows, classes = p.classes;
  labels += p.labels_off;
  lse += p.lse_off;
  scale += (int64_t)params[7];
  int per_row = (int)params[8];
  dx += (int64_t)params[9];
  int failed = 0;
#pragma omp parallel if (rows * classes >= PARALLEL_MIN_WORK)
  {
    float *buf = row_buffer(p.dtype, classes, &failed);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < rows; i++) {
      if (failed) continue;
      float *d = dx + i * classes;
      int32_t label = labels[i];
      if (label == p.ignore) {
        memset(d, 0, sizeof(float) * (size_t)classes);
        continue;
      }
      const float *x = row_f32(logits, p.dtype, p.logits_off + i * classes, classes, buf);
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
