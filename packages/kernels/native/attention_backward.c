/*
 * Attention backward (FlashAttention-2 style) from the forward's out and lse, in tiles: for a block
 * of queries and a block of keys, S = Q·Kᵀ, P = exp(scale·S − lse) over the visible keys (causal,
 * key padding mask, packed documents), dP = dO·Vᵀ, dS = P ⊙ (dP − D)·scale with D = dO·O, then
 * dV += Pᵀ·dO, dK += dSᵀ·Q and dQ += dS·K, each a product of small tiles (tile_gemm.h) instead of
 * two dot products and three row updates per (query, key) pair.
 * One task per (batch, kv head): it widens that head's K and V to dense f32 once (rows and
 * transposed), accumulates its dK/dV rows in dense local buffers and owns the dQ rows of its query
 * heads (GQA: query head h reads kv head h / (Hq / Hkv)), so threads never write one element.
 * params: as nt_attention's first 35, then dO: dtype, offset, strides batch/seq/head; out offset,
 * lse offset (dense f32). Outputs dense f32 from offset 0, zero-filled here: dq (or NULL), dk, dv (or NULL).
 */
#include "native.h"
#include "attention_params.h"
#include "tile_gemm.h"
#include "vmath.h"

#include <math.h>
#include <stdlib.h>

enum { ATT_BWD_QUERIES = 32, ATT_BWD_KEYS = 64 };

static inline float read_value(const void *p, int dtype, int64_t i) {
  switch (dtype) {
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_I32: return (float)((const int32_t *)p)[i];
    default: return ((const float *)p)[i];
  }
}

typedef struct {
  float *kf, *vf, *kt, *vt, *dkl, *dvl, *kseq, *qb, *gb, *dqb, *p, *dp, *lse, *rowdot, *own;
  unsigned char *visible;
} att_scratch_t;

EXPORT int nt_attention_backward(const double *params, const void *q, const void *k, const void *v, const void *mask, const void *seq,
                                 const void *dout, const float *out, const float *lse, float *dq, float *dk, float *dv) {
  const att_params parsed = att_read_params(params), *a = &parsed;
  int64_t batch = a->batch, queries = a->queries, hq = a->hq, hkv = a->hkv, hd = a->hd, vd = a->vd, keys = a->keys, qoff = a->qoff;
  int causal = a->causal;
  float scale = a->scale;
  int q_dt = a->q.dtype, k_dt = a->k.dtype, v_dt = a->v.dtype;
  int has_mask = a->mask.present, m_dt = a->mask.dtype, has_seq = a->seq.present, s_dt = a->seq.dtype;
  const att_operand gout = att_read_operand(params + 35); /* dout: dtype, offset, strides */
  int g_dt = gout.dtype;
  out += (int64_t)params[40];
  lse += (int64_t)params[41];
  const int64_t group = hq / hkv, QB = ATT_BWD_QUERIES, KB = ATT_BWD_KEYS;
  if (dq) memset(dq, 0, sizeof(float) * (size_t)(batch * queries * hq * hd));
  if (dk) memset(dk, 0, sizeof(float) * (size_t)(batch * keys * hkv * hd));
  if (dv) memset(dv, 0, sizeof(float) * (size_t)(batch * keys * hkv * vd));
  if (keys <= 0 || queries <= 0) return 0;
  int failed = 0;
  const size_t kh = (size_t)(keys * (hd > 0 ? hd : 1)), kv = (size_t)(keys * (vd > 0 ? vd : 1));
  const size_t qh = (size_t)(QB * (hd > 0 ? hd : 1)), qv = (size_t)(QB * (vd > 0 ? vd : 1));
#pragma omp parallel if (batch * hkv > 1 && batch * queries * hq * keys * (hd + vd) >= PARALLEL_MIN_WORK)
  {
    att_scratch_t s = {
        .kf = malloc(sizeof(float) * kh),
        .vf = malloc(sizeof(float) * kv),
        .kt = malloc(sizeof(float) * kh),
        .vt = malloc(sizeof(float) * kv),
        .dkl = malloc(sizeof(float) * kh),
        .dvl = malloc(sizeof(float) * kv),
        .kseq = malloc(sizeof(float) * (size_t)keys),
        .qb = malloc(sizeof(float) * qh),
        .gb = malloc(sizeof(float) * qv),
        .dqb = malloc(sizeof(float) * qh),
        .p = malloc(sizeof(float) * (size_t)(QB * KB)),
        .dp = malloc(sizeof(float) * (size_t)(QB * KB)),
        .lse = malloc(sizeof(float) * (size_t)QB),
        .rowdot = malloc(sizeof(float) * (size_t)QB),
        .own = malloc(sizeof(float) * (size_t)QB),
        .visible = malloc((size_t)keys),
    };
    int ok = s.kf && s.vf && s.kt && s.vt && s.dkl && s.dvl && s.kseq && s.qb && s.gb && s.dqb && s.p && s.dp && s.lse && s.rowdot && s.own && s.visible;
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < batch; b++) {
      for (int64_t g = 0; g < hkv; g++) {
        if (!ok) {
#pragma omp atomic write
          failed = 1;
          continue;
        }
        for (int64_t j = 0; j < keys; j++) {
          int64_t kb = att_at(&a->k, b, j, g);
          int64_t vb = att_at(&a->v, b, j, g);
          for (int64_t d = 0; d < hd; d++) s.kt[d * keys + j] = s.kf[j * hd + d] = read_value(k, k_dt, kb + d);
          for (int64_t d = 0; d < vd; d++) s.vt[d * keys + j] = s.vf[j * vd + d] = read_value(v, v_dt, vb + d);
          s.visible[j] = !has_mask || read_value(mask, m_dt, att_key(&a->mask, b, j)) != 0.0f;
          s.kseq[j] = has_seq ? read_value(seq, s_dt, att_key(&a->seq, b, j)) : 0.0f;
        }
        memset(s.dkl, 0, sizeof(float) * kh);
        memset(s.dvl, 0, sizeof(float) * kv);
        for (int64_t h = g * group; h < (g + 1) * group; h++) {
          for (int64_t i0 = 0; i0 < queries; i0 += QB) {
            const int64_t nq = queries - i0 < QB ? queries - i0 : QB;
            /* The block's q and dO rows (dense f32), lse, D = dO·O and document ids. */
            int any = 0;
            for (int64_t i = 0; i < nq; i++) {
              int64_t row = (b * queries + i0 + i) * hq + h;
              int64_t qbase = att_at(&a->q, b, i0 + i, h);
              int64_t gbase = att_at(&gout, b, i0 + i, h);
              for (int64_t d = 0; d < hd; d++) s.qb[i * hd + d] = read_value(q, q_dt, qbase + d);
              for (int64_t d = 0; d < vd; d++) s.gb[i * vd + d] = read_value(dout, g_dt, gbase + d);
              s.lse[i] = lse[row];
              s.rowdot[i] = vdot(s.gb + i * vd, out + row * vd, vd);
              s.own[i] = has_seq ? read_value(seq, s_dt, att_key(&a->seq, b, qoff + i0 + i)) : 0.0f;
              any |= s.lse[i] != INFINITY;
            }
            if (!any) continue;
            memset(s.dqb, 0, sizeof(float) * qh);
            /* Keys past the block's last query are invisible to all of it when causal. */
            int64_t kend = causal && qoff + i0 + nq < keys ? qoff + i0 + nq : keys;
            for (int64_t j0 = 0; j0 < kend; j0 += KB) {
              const int64_t nk = kend - j0 < KB ? kend - j0 : KB;
              tile_gemm(nq, nk, hd, s.qb, hd, 1, s.kt + j0, keys, s.p, KB, 0);  /* S = Q·Kᵀ */
              tile_gemm(nq, nk, vd, s.gb, vd, 1, s.vt + j0, keys, s.dp, KB, 0); /* dP = dO·Vᵀ */
              for (int64_t i = 0; i < nq; i++) {
                float *pr = s.p + i * KB, *dpr = s.dp + i * KB;
                const int64_t pos = qoff + i0 + i;
                const float l = s.lse[i];
                for (int64_t j = 0; j < nk; j++) {
                  int64_t kj = j0 + j;
                  int seen = l != INFINITY && s.visible[kj] && (!causal || kj <= pos) && (!has_seq || s.kseq[kj] == s.own[i]);
                  pr[j] = seen ? pr[j] * scale - l : -INFINITY;
                }
                int64_t j = 0;
                for (; j + VLEN <= nk; j += VLEN) {
                  vf pj = vexp(vload(pr + j));
                  vstore(pr + j, pj);
                  vstore(dpr + j, pj * (vload(dpr + j) - vbroadcast(s.rowdot[i])) * vbroadcast(scale));
                }
                for (; j < nk; j++) {
                  pr[j] = expf(pr[j]);
                  dpr[j] = pr[j] * (dpr[j] - s.rowdot[i]) * scale;
                }
              }
              if (dv) tile_gemm(nk, vd, nq, s.p, 1, KB, s.gb, vd, s.dvl + j0 * vd, vd, 1); /* dV += Pᵀ·dO */
              if (dk) tile_gemm(nk, hd, nq, s.dp, 1, KB, s.qb, hd, s.dkl + j0 * hd, hd, 1); /* dK += dSᵀ·Q */
              if (dq) tile_gemm(nq, hd, nk, s.dp, KB, 1, s.kf + j0 * hd, hd, s.dqb, hd, 1); /* dQ += dS·K */
            }
            if (dq)
              for (int64_t i = 0; i < nq; i++) memcpy(dq + ((b * queries + i0 + i) * hq + h) * hd, s.dqb + i * hd, sizeof(float) * (size_t)hd);
          }
        }
        for (int64_t j = 0; j < keys; j++) {
          int64_t at = (b * keys + j) * hkv + g;
          if (dk) memcpy(dk + at * hd, s.dkl + j * hd, sizeof(float) * (size_t)hd);
          if (dv) memcpy(dv + at * vd, s.dvl + j * vd, sizeof(float) * (size_t)vd);
        }
      }
    }
    free(s.kf), free(s.vf), free(s.kt), free(s.vt), free(s.dkl), free(s.dvl), free(s.kseq), free(s.qb), free(s.gb), free(s.dqb);
    free(s.p), free(s.dp), free(s.lse), free(s.rowdot), free(s.own), free(s.visible);
  }
  return failed ? -1 : 0;
}
