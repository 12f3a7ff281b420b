/*
 * Backward of nt_ssd_scan's y in the chunked (SSD) form: within a chunk of Q positions the scan is
 *   y_t = Σ_{s≤t} M[t,s]·x_s + e^{cum_t}·S_in·C_t + D·x_t,  M[t,s] = (C_t·B_s)·e^{cum_t − cum_s}·dt_s
 *   S_out = e^{cum_end}·S_in + Σ_s e^{cum_end − cum_s}·dt_s·x_s ⊗ B_s
 * with cum_t = Σ_{r ≤ t in the chunk} dt_r·A (masked across document starts), so every gradient
 * is a product of small tiles (tile_gemm.h) instead of a walk over every state element at every
 * position: ~5·P·N + 3·Q·N + 2·Q·P multiply-adds per position and head instead of ~15·P·N.
 * The gradients of the exponents gather in dcum; a_t = dt_t·A feeds cum_r for r ≥ t, so
 * d a_t = Σ_{r≥t} dcum_r, ddt_t gets A·d a_t and dA gets dt_t·d a_t.
 * Per (batch, head): a forward pass over the chunks keeps each chunk's incoming state, then the
 * chunks run backwards carrying dS (the gradient of the state leaving the chunk). A group's heads
 * run in one task, adding into its rows of dB and dC; dA and dD gather in per-head sums, so no two
 * threads write one element and the result does not depend on timing.
 */
#include "native.h"
#include "ssd_chunk.h"
#include "tile_gemm.h"

#include <math.h>
#include <stdlib.h>

/* Per-thread scratch, sized for one (batch, head) task. */
typedef struct {
  float *marks, *dS, *dSn, *Xt, *Bt, *CB, *DM, *Xw, *dYe, *VT, *Ci;
  /* The chunk's rows of x, dy, B, C and its dx, dB, dC, dense: the operands' rows are H·P and G·N
     floats apart (4 KiB in bench-small), so a chunk's rows in place would share one set of L1. */
  float *Xk, *dYk, *Bk, *Ck, *dXk, *dBk, *dCk;
} scratch_t;

static int scratch_alloc(scratch_t *s, int64_t chunks, int64_t hd, int64_t sd) {
  const int64_t Q = SSD_CHUNK, ps = hd * sd;
  s->marks = malloc(sizeof(float) * (size_t)(chunks * ps));
  s->dS = malloc(sizeof(float) * (size_t)ps);
  s->dSn = malloc(sizeof(float) * (size_t)ps);
  s->Xt = malloc(sizeof(float) * (size_t)(hd * Q));
  s->Bt = malloc(sizeof(float) * (size_t)(sd * Q));
  s->CB = malloc(sizeof(float) * (size_t)(Q * Q));
  s->DM = malloc(sizeof(float) * (size_t)(Q * Q));
  s->Xw = malloc(sizeof(float) * (size_t)(Q * hd));
  s->dYe = malloc(sizeof(float) * (size_t)(Q * hd));
  s->VT = malloc(sizeof(float) * (size_t)(Q * hd));
  s->Ci = malloc(sizeof(float) * (size_t)(Q * sd));
  s->Xk = malloc(sizeof(float) * (size_t)(Q * hd));
  s->dYk = malloc(sizeof(float) * (size_t)(Q * hd));
  s->dXk = malloc(sizeof(float) * (size_t)(Q * hd));
  s->Bk = malloc(sizeof(float) * (size_t)(Q * sd));
  s->Ck = malloc(sizeof(float) * (size_t)(Q * sd));
  s->dBk = malloc(sizeof(float) * (size_t)(Q * sd));
  s->dCk = malloc(sizeof(float) * (size_t)(Q * sd));
  return s->marks && s->dS && s->dSn && s->Xt && s->Bt && s->CB && s->DM && s->Xw && s->dYe && s->VT && s->Ci && s->Xk && s->dYk && s->dXk && s->Bk && s->Ck && s->dBk && s->dCk;
}

static void scratch_free(scratch_t *s) {
  free(s->marks), free(s->dS), free(s->dSn), free(s->Xt), free(s->Bt), free(s->CB), free(s->DM);
  free(s->Xw), free(s->dYe), free(s->VT), free(s->Ci);
  free(s->Xk), free(s->dYk), free(s->dXk), free(s->Bk), free(s->Ck), free(s->dBk), free(s->dCk);
}

/* The operands of one head of one batch row: row t of x/dy/dx at t·sx, of B/C/dB/dC at t·sb, dt at t·heads; dB and dC are added to. */
typedef struct {
  int64_t length, hd, sd, sx, sb, heads;
  float a, dh;
  const float *x, *dy, *B, *C, *dt;
  const int32_t *ids;
  float *dx, *ddt, *dB, *dC;
} task_t;

/* Σ a[i]·b[i] in vector lanes (a serial double sum would wait on each add), summed in double. */
static double dot_f64(const float *a, const float *b, int64_t n) {
  vf acc0 = {0}, acc1 = {0};
  int64_t i = 0;
  for (; i + 2 * VLEN <= n; i += 2 * VLEN) {
    acc0 += vload(a + i) * vload(b + i);
    acc1 += vload(a + i + VLEN) * vload(b + i + VLEN);
  }
  double r = 0.0;
  for (int j = 0; j < VLEN; j++) r += (double)acc0[j] + (double)acc1[j];
  for (; i < n; i++) r += (double)a[i] * b[i];
  return r;
}

/* marks[c] = the state entering chunk c (marks[0] = the initial state, already there). */
static void forward_marks(const task_t *k, int64_t chunks, scratch_t *s) {
  const int64_t hd = k->hd, sd = k->sd, ps = hd * sd;
  chunk_t ch;
  for (int64_t c = 0; c + 1 < chunks; c++) {
    chunk_setup(&ch, c, k->length, k->dt, k->heads, k->a, k->ids);
    int64_t q = ch.q, end = ch.seg[q - 1];
    const float *Sin = s->marks + c * ps;
    float *Sout = s->marks + (c + 1) * ps;
    float fe = end == 0 ? expf((float)ch.cum[q - 1]) : 0.0f;
    for (int64_t i = 0; i < ps; i++) Sout[i] = fe * Sin[i];
    for (int64_t i = 0; i < q; i++) {
      float w = ch.seg[i] == end ? expf((float)(ch.cum[q - 1] - ch.cum[i])) * ch.dt[i] : 0.0f;
      const float *xr = k->x + (ch.t0 + i) * k->sx;
      for (int64_t p = 0; p < hd; p++) s->Xw[i * hd + p] = w * xr[p];
    }
    gather_rows(s->Bk, k->B + ch.t0 * k->sb, k->sb, q, sd);
    /* S_out[p][n] += Σ_s Xw[s][p]·B_s[n] */
    tile_gemm(hd, sd, q, s->Xw, 1, hd, s->Bk, sd, Sout, sd, 1);
  }
}

/*
 * Chunk c backwards: dS holds the gradient of the state leaving it (have_dS = 0: none, the last
 * chunk); dSn receives the gradient of the state entering it. Returns the chunk's dA term.
 */
static double backward_chunk(const task_t *k, int64_t c, int have_dS, scratch_t *s, double *dD_acc) {
  const int64_t Q = SSD_CHUNK, hd = k->hd, sd = k->sd, sx = k->sx, sb = k->sb, ps = hd * sd;
  chunk_t ch = {0};
  chunk_setup(&ch, c, k->length, k->dt, k->heads, k->a, k->ids);
  const int64_t q = ch.q, t0 = ch.t0;
  const int end = ch.seg[q - 1];
  float *X = s->Xk, *dY = s->dYk, *Bm = s->Bk, *Cm = s->Ck, *dX = s->dXk, *dBm = s->dBk, *dCm = s->dCk;
  gather_rows(X, k->x + t0 * sx, sx, q, hd);
  gather_rows(dY, k->dy + t0 * sx, sx, q, hd);
  gather_rows(Bm, k->B + t0 * sb, sb, q, sd);
  gather_rows(Cm, k->C + t0 * sb, sb, q, sd);
  float ddt_part[SSD_CHUNK];
  double dcum[SSD_CHUNK];
  for (int64_t i = 0; i < q; i++) ddt_part[i] = 0.0f, dcum[i] = 0.0;

  /* Within the chunk: CB[t][s] = C_t·B_s and DM[t][s] = dy_t·x_s (the gradient of M[t][s]). */
  for (int64_t i = 0; i < q; i++) {
    for (int64_t p = 0; p < hd; p++) s->Xt[p * Q + i] = X[i * hd + p];
    for (int64_t n = 0; n < sd; n++) s->Bt[n * Q + i] = Bm[i * sd + n];
  }
  tile_gemm(q, q, sd, Cm, sd, 1, s->Bt, Q, s->CB, Q, 0);
  tile_gemm(q, q, hd, dY, hd, 1, s->Xt, Q, s->DM, Q, 0);
  /* CB becomes M, DM the gradient of CB; dt and the exponents collect their terms. */
  for (int64_t t = 0; t < q; t++) {
    float *cb = s->CB + t * Q, *dm = s->DM + t * Q, Lrow[SSD_CHUNK];
    chunk_decay_row(&ch, t, Lrow);
    for (int64_t j = 0; j < q; j++) {
      if (Lrow[j] == 0.0f) {
        cb[j] = dm[j] = 0.0f;
        continue;
      }
      float L = Lrow[j], cbl = cb[j] * L, g = dm[j] * cbl;
      ddt_part[j] += g;
      if (j < t) {
        double z = (double)g * ch.dt[j];
        dcum[t] += z;
        dcum[j] -= z;
      }
      cb[j] = cbl * ch.dt[j];
      dm[j] = dm[j] * L * ch.dt[j];
    }
  }
  for (int64_t i = 0; i < q * hd; i++) dX[i] = k->dh * dY[i];
  *dD_acc += dot_f64(dY, X, q * hd);
  tile_gemm(q, hd, q, s->CB, 1, Q, dY, hd, dX, hd, 1); /* dx_s += Σ_t M[t][s]·dy_t */
  tile_gemm(q, sd, q, s->DM, Q, 1, Bm, sd, dCm, sd, 0); /* dC_t = Σ_s dCB[t][s]·B_s */
  tile_gemm(q, sd, q, s->DM, 1, Q, Cm, sd, dBm, sd, 0); /* dB_s = Σ_t dCB[t][s]·C_t */

  /* The incoming state's terms e^{cum_t}·S_in·C_t, for positions before any document start. */
  const float *Sin = s->marks + c * ps;
  if (ch.seg[0] == 0) {
    for (int64_t i = 0; i < q; i++) {
      float e = ch.seg[i] == 0 ? expf((float)ch.cum[i]) : 0.0f;
      for (int64_t p = 0; p < hd; p++) s->dYe[i * hd + p] = e * dY[i * hd + p];
    }
    tile_gemm(q, sd, hd, s->dYe, hd, 1, Sin, sd, s->Ci, sd, 0); /* dC_t's share: e^{cum_t}·dy_t·S_in */
    for (int64_t i = 0; i < q; i++) {
      const float *ci = s->Ci + i * sd, *cr = Cm + i * sd;
      float *out = dCm + i * sd;
      float dot = 0.0f;
      for (int64_t n = 0; n < sd; n++) {
        dot += ci[n] * cr[n];
        out[n] += ci[n];
      }
      dcum[i] += dot;
    }
    float fe = have_dS && end == 0 ? expf((float)ch.cum[q - 1]) : 0.0f;
    if (fe != 0.0f)
      for (int64_t i = 0; i < ps; i++) s->dSn[i] = fe * s->dS[i];
    else memset(s->dSn, 0, sizeof(float) * (size_t)ps);
    tile_gemm(hd, sd, q, s->dYe, 1, hd, Cm, sd, s->dSn, sd, 1); /* dS_in += Σ_t e^{cum_t}·dy_t ⊗ C_t */
  } else {
    memset(s->dSn, 0, sizeof(float) * (size_t)ps);
  }

  /* The leaving state's terms e^{cum_end − cum_s}·dt_s·x_s ⊗ B_s (and e^{cum_end}·S_in, above). */
  if (have_dS) {
    tile_gemm(hd, q, sd, s->dS, sd, 1, s->Bt, Q, s->VT, Q, 0); /* VT[p][s] = (dS·B_s)[p] */
    for (int64_t i = 0; i < q; i++) {
      float w = ch.seg[i] == end ? expf((float)(ch.cum[q - 1] - ch.cum[i])) : 0.0f, wd = w * ch.dt[i];
      const float *xr = X + i * hd, *v = s->VT + i;
      float *dxr = dX + i * hd, *xw = s->Xw + i * hd;
      float xv = 0.0f;
      for (int64_t p = 0; p < hd; p++) {
        xv += xr[p] * v[p * Q];
        dxr[p] += wd * v[p * Q];
        xw[p] = wd * xr[p];
      }
      ddt_part[i] += w * xv;
      dcum[i] -= (double)wd * xv;
    }
    tile_gemm(q, sd, hd, s->Xw, hd, 1, s->dS, sd, dBm, sd, 1); /* dB_s += wd_s·x_sᵀ·dS */
    const float *Sout = s->marks + (c + 1) * ps;
    dcum[q - 1] += dot_f64(s->dS, Sout, ps);
  }

  for (int64_t i = 0; i < q; i++) {
    memcpy(k->dx + (t0 + i) * sx, dX + i * hd, sizeof(float) * (size_t)hd);
    float *ob = k->dB + (t0 + i) * sb, *oc = k->dC + (t0 + i) * sb;
    const float *ib = dBm + i * sd, *ic = dCm + i * sd;
    for (int64_t n = 0; n < sd; n++) {
      ob[n] += ib[n];
      oc[n] += ic[n];
    }
  }
  double run = 0.0, dA_part = 0.0;
  for (int64_t i = q - 1; i >= 0; i--) {
    run += dcum[i];
    k->ddt[(t0 + i) * k->heads] = ddt_part[i] + (float)(k->a * run);
    dA_part += ch.dt[i] * run;
  }
  return dA_part;
}

/*
 * params: as nt_ssd_scan's first 21 (y's offset is dy's).
 * Outputs (dense f32, offset 0): dx [B,L,H,P], ddt [B,L,H], dA [H], dB [B,L,G,N], dC [B,L,G,N], dD [H] (or null), dinit [B,H,P,N] (or null).
 */
EXPORT int nt_ssd_scan_backward(const double *params, const float *x, const float *dt, const void *A, const float *B, const float *C, const void *D,
                                const float *init, const int32_t *seq, const float *dy, float *dx, float *ddt, float *dA, float *dB, float *dC,
                                float *dD, float *dinit) {
  ssd_params q = ssd_read_params(params);
  int64_t batch = q.batch, length = q.length, heads = q.heads, hd = q.hd, groups = q.groups, sd = q.sd;
  int64_t a_off = q.a_off, d_off = q.d_off, init_off = q.init_off, seq_off = q.seq_off;
  int a_dt = q.a_dt, d_dt = q.d_dt, has_d = q.has_d, has_init = q.has_init, has_seq = q.has_seq;
  x += q.x_off, dt += q.dt_off, B += q.b_off, C += q.c_off, dy += q.out_off; /* y's offset is dy's */
  int64_t hpg = heads / groups, ps = hd * sd;
  int64_t chunks = (length + SSD_CHUNK - 1) / SSD_CHUNK;
  int64_t rows = batch * length * groups;
  if (length <= 0 || batch <= 0) {
    for (int64_t h = 0; h < heads; h++) {
      dA[h] = 0.0f;
      if (dD) dD[h] = 0.0f;
    }
    if (dinit) memset(dinit, 0, sizeof(float) * (size_t)(batch * heads * ps));
    return 0;
  }
  /*
   * A task is a slice of a group's heads in one batch row: its heads add into the same rows of dB
   * and dC, so a group is split only when there are fewer groups than threads, the slices past the
   * first adding into their own buffers, summed into dB and dC afterwards.
   */
  int parallel = batch * heads * length * ps >= PARALLEL_MIN_WORK;
  int64_t threads = parallel ? nt_threads() : 1, slices = 1;
  while (slices < hpg && batch * groups * slices < threads) slices++;
  int64_t tasks = batch * groups * slices;
  double *ta = calloc((size_t)(batch * heads), sizeof(double)), *td = calloc((size_t)(batch * heads), sizeof(double));
  float *extra = slices > 1 ? malloc(sizeof(float) * (size_t)(2 * (slices - 1) * rows * sd)) : NULL;
  int failed = !ta || !td || (slices > 1 && !extra);
  if (!failed) {
#pragma omp parallel if (parallel && tasks > 1)
    {
      scratch_t s = {0};
      if (!scratch_alloc(&s, chunks, hd, sd)) {
#pragma omp atomic write
        failed = 1;
      }
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tasks; task++) {
        int stop;
#pragma omp atomic read
        stop = failed;
        if (stop) continue;
        int64_t sl = task % slices, b = task / slices / groups, g = task / slices % groups;
        float *outB = sl == 0 ? dB : extra + 2 * (sl - 1) * rows * sd, *outC = sl == 0 ? dC : extra + (2 * (sl - 1) + 1) * rows * sd;
        outB += (b * length * groups + g) * sd;
        outC += (b * length * groups + g) * sd;
        for (int64_t t = 0; t < length; t++) {
          memset(outB + t * groups * sd, 0, sizeof(float) * (size_t)sd);
          memset(outC + t * groups * sd, 0, sizeof(float) * (size_t)sd);
        }
        for (int64_t h = g * hpg + sl * hpg / slices; h < g * hpg + (sl + 1) * hpg / slices; h++) {
          int64_t bh = b * heads + h;
          task_t k = {
              .length = length,
              .hd = hd,
              .sd = sd,
              .sx = heads * hd,
              .sb = groups * sd,
              .heads = heads,
              .a = read_param(A, a_dt, a_off + h),
              .dh = has_d ? read_param(D, d_dt, d_off + h) : 0.0f,
              .x = x + (b * length * heads + h) * hd,
              .dy = dy + (b * length * heads + h) * hd,
              .B = B + (b * length * groups + g) * sd,
              .C = C + (b * length * groups + g) * sd,
              .dt = dt + b * length * heads + h,
              .ids = has_seq ? seq + seq_off + b * length : NULL,
              .dx = dx + (b * length * heads + h) * hd,
              .ddt = ddt + b * length * heads + h,
              .dB = outB,
              .dC = outC,
          };
          if (has_init) memcpy(s.marks, init + init_off + bh * ps, sizeof(float) * (size_t)ps);
          else memset(s.marks, 0, sizeof(float) * (size_t)ps);
          forward_marks(&k, chunks, &s);
          double dA_acc = 0.0, dD_acc = 0.0;
          for (int64_t c = chunks - 1; c >= 0; c--) {
            dA_acc += backward_chunk(&k, c, c + 1 < chunks, &s, &dD_acc);
            float *swap = s.dS;
            s.dS = s.dSn;
            s.dSn = swap;
          }
          if (dinit) memcpy(dinit + bh * ps, s.dS, sizeof(float) * (size_t)ps);
          ta[bh] = dA_acc;
          td[bh] = dD_acc;
        }
      }
      scratch_free(&s);
    }
  }
  if (!failed) {
    for (int64_t h = 0; h < heads; h++) {
      double sa = 0.0, sdd = 0.0;
      for (int64_t b = 0; b < batch; b++) {
        sa += ta[b * heads + h];
        sdd += td[b * heads + h];
      }
      dA[h] = (float)sa;
      if (dD) dD[h] = (float)sdd;
    }
    for (int64_t sl = 1; sl < slices; sl++) {
      const float *eb = extra + 2 * (sl - 1) * rows * sd, *ec = eb + rows * sd;
#pragma omp parallel for schedule(static) if (parallel)
      for (int64_t i = 0; i < rows * sd; i++) {
        dB[i] += eb[i];
        dC[i] += ec[i];
      }
    }
  }
  free(extra);
  free(ta);
  free(td);
  return failed ? -1 : 0;
}
