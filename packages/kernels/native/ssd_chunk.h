/*
 * A chunk of the Mamba2 scan in its SSD form (scan.c's forward, scan_backward.c): Q positions whose
 * mutual terms are Q×Q tiles. Within a chunk, cum_t = Σ_{r ≤ t} dt_r·A (inclusive), and a position
 * in segment 0 continues the state entering the chunk; a document start opens a new segment.
 */
#ifndef NEMOTRON_SSD_CHUNK_H
#define NEMOTRON_SSD_CHUNK_H

#include "native.h"
#include "vmath.h"

/* Positions per chunk: the Q×Q tiles stay small next to the P×N products that dominate. */
enum { SSD_CHUNK = 32 };

/* The params (f64) of nt_ssd_scan and its backward: shapes, operand offsets (in elements), dtypes, flags. */
typedef struct {
  int64_t batch, length, heads, hd, groups, sd;
  int64_t x_off, dt_off, a_off, b_off, c_off, d_off, init_off, seq_off, out_off, final_off;
  int a_dt, d_dt, has_d, has_init, has_seq;
} ssd_params;

static inline ssd_params ssd_read_params(const double *p) {
  ssd_params q;
  int64_t *shape[] = {&q.batch, &q.length, &q.heads, &q.hd, &q.groups, &q.sd, &q.x_off, &q.dt_off,
                      &q.a_off, &q.b_off, &q.c_off, &q.d_off, &q.init_off, &q.seq_off, &q.out_off, &q.final_off};
  for (int i = 0; i < 16; i++) *shape[i] = (int64_t)p[i];
  q.a_dt = (int)p[16], q.d_dt = (int)p[17], q.has_d = (int)p[18], q.has_init = (int)p[19], q.has_seq = (int)p[20];
  return q;
}

static inline float read_param(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* A chunk's positions [t0, t0+q): their dt, inclusive log-decay sums and document segments (0 = continues the incoming state). */
typedef struct {
  int64_t t0, q;
  float dt[SSD_CHUNK];
  double cum[SSD_CHUNK];
  int seg[SSD_CHUNK];
} chunk_t;

static inline void chunk_setup(chunk_t *k, int64_t c, int64_t length, const float *dt_row, int64_t dt_stride, float a, const int32_t *ids) {
  k->t0 = c * SSD_CHUNK;
  k->q = length - k->t0 < SSD_CHUNK ? length - k->t0 : SSD_CHUNK;
  double run = 0.0;
  int seg = 0;
  for (int64_t i = 0; i < k->q; i++) {
    int64_t t = k->t0 + i;
    k->dt[i] = dt_row[t * dt_stride];
    run += (double)k->dt[i] * a;
    k->cum[i] = run;
    if (ids && t > 0 && ids[t] != ids[t - 1]) seg++;
    k->seg[i] = seg;
  }
}

/* row[s] = e^{cum_t − cum_s} for s ≤ t in t's document, else 0, for s < q (vector exp: the chunk's Q² factors). */
static inline void chunk_decay_row(const chunk_t *k, int64_t t, float *row) {
  float diff[SSD_CHUNK];
  for (int64_t s = 0; s < k->q; s++) diff[s] = s <= t && k->seg[s] == k->seg[t] ? (float)(k->cum[t] - k->cum[s]) : -INFINITY;
  int64_t s = 0;
  for (; s + VLEN <= k->q; s += VLEN) vstore(row + s, vexp(vload(diff + s)));
  for (; s < k->q; s++) row[s] = expf(diff[s]);
}

/* Rows [0, q) of a strided operand into a dense [q][w] tile. */
static inline void gather_rows(float *dst, const float *src, int64_t stride, int64_t q, int64_t w) {
  for (int64_t i = 0; i < q; i++) memcpy(dst + i * w, src + i * stride, sizeof(float) * (size_t)w);
}

#endif
