/*
 * Attention forward over strided [B, S, H, D] views (last dim dense), f32 math: for each
 * (batch, query, head) row the visible keys' scores, a direct softmax and the weighted sum of
 * values — causal (with a query offset: decode over a cache), key padding mask, packed documents
 * (seq ids) and GQA (query head h reads kv head h / (Hq / Hkv)). Rows with no visible key get zeros
 * and lse = +inf. Threads take rows; the score buffer is per thread.
 */
#include "native.h"
#include "vmath.h"
#include "attention_params.h"

#include <math.h>
#include <stdlib.h>

static inline float readf(const void *p, int dtype, int64_t i) {
  switch (dtype) {
    case DT_BF16: return bf16_to_f32(((const uint16_t *)p)[i]);
    case DT_I32: return (float)((const int32_t *)p)[i];
    default: return ((const float *)p)[i];
  }
}

/* Dot product of a q row (f32) with a key row (f32 or bf16), both dense. */
static inline float dot(const float *q, const void *k, int kdt, int64_t n) {
  vf acc = {0};
  int64_t d = 0;
  float r = 0.0f;
  if (kdt == DT_F32) {
    const float *kf = k;
    for (; d + VLEN <= n; d += VLEN) acc += vload(q + d) * vload(kf + d);
    r = vsum(acc);
    for (; d < n; d++) r += q[d] * kf[d];
  } else {
    const uint16_t *kh = k;
    for (; d + VLEN <= n; d += VLEN) acc += vload(q + d) * vload_bf16(kh + d);
    r = vsum(acc);
    for (; d < n; d++) r += q[d] * bf16_to_f32(kh[d]);
  }
  return r;
}

/*
 * Prefill rows (many queries): K is first transposed per (batch, kv head) into f32 [D][keys], so a
 * query's scores come out VLEN keys at a time with no horizontal sums, the softmax's exponentials are
 * vector ones, and the value rows are summed into vector accumulators. The query heads of one kv
 * head (GQA) go through the keys and values together, up to HEAD_BLOCK at a time, so each vector
 * of K or V loaded serves all of them. Returns 0 (nothing written)
 * when the shapes do not fit its vectors or the transposed copy cannot be allocated.
 */
enum { MAX_VALUE_VECTORS = 32 };

static inline vf vrow(const void *v, int v_dt, int64_t i) {
  return v_dt == DT_F32 ? vload((const float *)v + i) : vload_bf16((const uint16_t *)v + i);
}

/* acc[0..8) = Σ_j w[j] · v[base + j·stride + u·VLEN]: eight accumulators held in registers. */
static void weighted_rows_8(const float *w, int64_t n, const void *v, int v_dt, int64_t base, int64_t stride, vf *acc) {
  vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
  for (int64_t j = 0; j < n; j++) {
    if (w[j] == 0.0f) continue;
    vf vw = vbroadcast(w[j]);
    int64_t r = base + j * stride;
    a0 += vw * vrow(v, v_dt, r);
    a1 += vw * vrow(v, v_dt, r + VLEN);
    a2 += vw * vrow(v, v_dt, r + 2 * VLEN);
    a3 += vw * vrow(v, v_dt, r + 3 * VLEN);
    a4 += vw * vrow(v, v_dt, r + 4 * VLEN);
    a5 += vw * vrow(v, v_dt, r + 5 * VLEN);
    a6 += vw * vrow(v, v_dt, r + 6 * VLEN);
    a7 += vw * vrow(v, v_dt, r + 7 * VLEN);
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3, acc[4] = a4, acc[5] = a5, acc[6] = a6, acc[7] = a7;
}

/* The same with four accumulators (a 64-wide head on AVX-512). */
static void weighted_rows_4(const float *w, int64_t n, const void *v, int v_dt, int64_t base, int64_t stride, vf *acc) {
  vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  for (int64_t j = 0; j < n; j++) {
    if (w[j] == 0.0f) continue;
    vf vw = vbroadcast(w[j]);
    int64_t r = base + j * stride;
    a0 += vw * vrow(v, v_dt, r);
    a1 += vw * vrow(v, v_dt, r + VLEN);
    a2 += vw * vrow(v, v_dt, r + 2 * VLEN);
    a3 += vw * vrow(v, v_dt, r + 3 * VLEN);
  }
  acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
}

/* The same for any other count of vectors (below 8). */
static void weighted_rows(const float *w, int64_t n, const void *v, int v_dt, int64_t base, int64_t stride, int64_t nu, vf *acc) {
  for (int64_t u = 0; u < nu; u++) acc[u] = vbroadcast(0.0f);
  for (int64_t j = 0; j < n; j++) {
    if (w[j] == 0.0f) continue;
    vf vw = vbroadcast(w[j]);
    for (int64_t u = 0; u < nu; u++) acc[u] += vw * vrow(v, v_dt, base + j * stride + u * VLEN);
  }
}

/*
 * Scores of keys [0, last) for NB query heads of one kv head at once (GQA): each key vector loaded
 * serves NB heads, where one head at a time loads four per broadcast. scores[hb·kp + j]; qrows[hb·hd + d].
 */
static inline __attribute__((always_inline)) void block_scores(const int nb, const float *qrows, const float *kg, int64_t kp, int64_t hd, int64_t last,
                                                                float *scores) {
  for (int64_t j = 0; j < last; j += 2 * VLEN) {
    vf s0[4] = {{0}}, s1[4] = {{0}};
    const float *kc = kg + j;
    for (int64_t d = 0; d < hd; d++, kc += kp) {
      vf k0 = vload(kc), k1 = vload(kc + VLEN);
      for (int hb = 0; hb < nb; hb++) {
        vf qd = vbroadcast(qrows[hb * hd + d]);
        s0[hb] += qd * k0;
        s1[hb] += qd * k1;
      }
    }
    for (int hb = 0; hb < nb; hb++) {
      vstore(scores + hb * kp + j, s0[hb]);
      vstore(scores + hb * kp + j + VLEN, s1[hb]);
    }
  }
}

/*
 * acc[hb·nv + u0 + {0,1}] = Σ_j w[hb·kp + j] · v[base + j·stride + (u0 + {0,1})·VLEN] for NB heads:
 * each pair of value vectors loaded serves NB heads. A key every head gives weight 0 (masked) is
 * skipped, as the one-head kernels do.
 */
static inline __attribute__((always_inline)) void block_weighted_pair(const int nb, const float *w, int64_t kp, int64_t n, const void *v, int v_dt,
                                                                       int64_t base, int64_t stride, int64_t u0, int64_t nv, vf *acc) {
  vf a0[4] = {{0}}, a1[4] = {{0}};
  for (int64_t j = 0; j < n; j++) {
    int any = 0;
    for (int hb = 0; hb < nb; hb++) any |= w[hb * kp + j] != 0.0f;
    if (!any) continue;
    int64_t r = base + j * stride;
    vf v0 = vrow(v, v_dt, r), v1 = vrow(v, v_dt, r + VLEN);
    for (int hb = 0; hb < nb; hb++) {
      vf vw = vbroadcast(w[hb * kp + j]);
      a0[hb] += vw * v0;
      a1[hb] += vw * v1;
    }
  }
  for (int hb = 0; hb < nb; hb++) {
    acc[hb * nv + u0] = a0[hb];
    acc[hb * nv + u0 + 1] = a1[hb];
  }
}

static void block_scores_n(int nb, const float *qrows, const float *kg, int64_t kp, int64_t hd, int64_t last, float *scores) {
  switch (nb) {
    case 4: block_scores(4, qrows, kg, kp, hd, last, scores); break;
    case 3: block_scores(3, qrows, kg, kp, hd, last, scores); break;
    case 2: block_scores(2, qrows, kg, kp, hd, last, scores); break;
    default: block_scores(1, qrows, kg, kp, hd, last, scores); break;
  }
}

static void block_weighted_pair_n(int nb, const float *w, int64_t kp, int64_t n, const void *v, int v_dt, int64_t base, int64_t stride, int64_t u0,
                                  int64_t nv, vf *acc) {
  switch (nb) {
    case 4: block_weighted_pair(4, w, kp, n, v, v_dt, base, stride, u0, nv, acc); break;
    case 3: block_weighted_pair(3, w, kp, n, v, v_dt, base, stride, u0, nv, acc); break;
    case 2: block_weighted_pair(2, w, kp, n, v, v_dt, base, stride, u0, nv, acc); break;
    default: block_weighted_pair(1, w, kp, n, v, v_dt, base, stride, u0, nv, acc); break;
  }
}

/* Query heads per block: the heads of one kv head that share each key and value load. */
enum { HEAD_BLOCK = 4 };

static int attention_prefill(const att_params *a, int has_lse, const void *q, const void *k, const void *v, const void *mask, const void *seq,
                             float *out, float *lse) {
  int64_t batch = a->batch, queries = a->queries, hq = a->hq, hkv = a->hkv, hd = a->hd, vd = a->vd, keys = a->keys, qoff = a->qoff;
  int causal = a->causal;
  float scale = a->scale;
  int q_dt = a->q.dtype, k_dt = a->k.dtype, v_dt = a->v.dtype;
  int has_mask = a->mask.present, m_dt = a->mask.dtype, has_seq = a->seq.present, s_dt = a->seq.dtype;
  /* out and lse arrive already moved to their offsets by nt_attention. */
  if (queries < 8 || vd % VLEN != 0 || vd / VLEN > MAX_VALUE_VECTORS || keys < 1 || hd < 1) return 0;
  int64_t group = hq / hkv;
  int64_t kp = (keys + 4 * VLEN - 1) / (4 * VLEN) * (4 * VLEN); /* padded key count: whole 4-vector steps */
  float *kt = malloc(sizeof(float) * (size_t)(batch * hkv * hd * kp));
  if (!kt) return 0;
  int failed = 0;
#pragma omp parallel if (batch * queries * hq * keys * (hd + vd) >= PARALLEL_MIN_WORK)
  {
#pragma omp for schedule(static) collapse(2)
    for (int64_t b = 0; b < batch; b++) {
      for (int64_t g = 0; g < hkv; g++) {
        float *dst = kt + (b * hkv + g) * hd * kp;
        for (int64_t j = 0; j < kp; j++) {
          int64_t kb = att_at(&a->k, b, j, g);
          for (int64_t d = 0; d < hd; d++) dst[d * kp + j] = j < keys ? readf(k, k_dt, kb + d) : 0.0f;
        }
      }
    }
    float *scores = malloc(sizeof(float) * (size_t)(HEAD_BLOCK * kp));
    float *qrows = malloc(sizeof(float) * (size_t)(HEAD_BLOCK * hd));
    /* Which keys a query row may see (mask, same document): one answer for all its heads. */
    unsigned char *visible = has_mask || has_seq ? malloc((size_t)kp) : NULL;
#pragma omp for schedule(dynamic, 4) collapse(2)
    for (int64_t b = 0; b < batch; b++) {
      for (int64_t i = 0; i < queries; i++) {
        if (!scores || !qrows || ((has_mask || has_seq) && !visible)) {
#pragma omp atomic write
          failed = 1;
          continue;
        }
        int64_t pos = qoff + i;
        float own = has_seq ? readf(seq, s_dt, att_key(&a->seq, b, pos)) : 0.0f;
        int64_t last = causal && pos + 1 < keys ? pos + 1 : keys;
        if (visible) {
          for (int64_t j = 0; j < last; j++) {
            int vis = 1;
            if (has_mask) vis = readf(mask, m_dt, att_key(&a->mask, b, j)) != 0.0f;
            if (vis && has_seq) vis = readf(seq, s_dt, att_key(&a->seq, b, j)) == own;
            visible[j] = (unsigned char)vis;
          }
        }
        for (int64_t h0 = 0; h0 < hq; ) {
          int64_t g = h0 / group;
          int nb = (g + 1) * group - h0 < HEAD_BLOCK ? (int)((g + 1) * group - h0) : HEAD_BLOCK;
          const float *kg = kt + (b * hkv + g) * hd * kp;
          for (int hb = 0; hb < nb; hb++) {
            int64_t qb = att_at(&a->q, b, i, h0 + hb);
            for (int64_t d = 0; d < hd; d++) qrows[hb * hd + d] = readf(q, q_dt, qb + d) * scale;
          }
          if (nb > 1) {
            block_scores_n(nb, qrows, kg, kp, hd, last, scores);
          } else {
            /* Scores of keys [0, last), 4 vectors of keys per step (independent FMA chains). */
            for (int64_t j = 0; j < last; j += 4 * VLEN) {
              vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
              const float *kc = kg + j;
              for (int64_t d = 0; d < hd; d++, kc += kp) {
                vf qd = vbroadcast(qrows[d]);
                s0 += qd * vload(kc);
                s1 += qd * vload(kc + VLEN);
                s2 += qd * vload(kc + 2 * VLEN);
                s3 += qd * vload(kc + 3 * VLEN);
              }
              vstore(scores + j, s0);
              vstore(scores + j + VLEN, s1);
              vstore(scores + j + 2 * VLEN, s2);
              vstore(scores + j + 3 * VLEN, s3);
            }
          }
          float sums[HEAD_BLOCK], maxes[HEAD_BLOCK];
          for (int hb = 0; hb < nb; hb++) {
            float *sc = scores + hb * kp;
            if (visible)
              for (int64_t j = 0; j < last; j++)
                if (!visible[j]) sc[j] = -INFINITY;
            float max = -INFINITY;
            for (int64_t j = 0; j < last; j++) max = sc[j] > max ? sc[j] : max;
            maxes[hb] = max;
            if (max == -INFINITY) {
              /* No visible key: weights 0 (its output is zeros), so the value sums skip every key. */
              for (int64_t j = 0; j < last; j++) sc[j] = 0.0f;
              sums[hb] = 0.0f;
              continue;
            }
            /* exp(s − max), a vector at a time; masked keys (−inf) give 0. */
            vf vmax = vbroadcast(max), vsumv = {0};
            int64_t j = 0;
            for (; j + VLEN <= last; j += VLEN) {
              vf e = vexp(vload(sc + j) - vmax);
              vstore(sc + j, e);
              vsumv += e;
            }
            float sum = vsum(vsumv);
            for (; j < last; j++) {
              sc[j] = expf(sc[j] - max);
              sum += sc[j];
            }
            sums[hb] = sum;
          }
          vf acc[HEAD_BLOCK * MAX_VALUE_VECTORS];
          int64_t nv = vd / VLEN;
          int64_t vrow0 = att_at(&a->v, b, 0, g);
          if (nb > 1 && nv % 2 == 0) {
            for (int64_t u0 = 0; u0 < nv; u0 += 2) block_weighted_pair_n(nb, scores, kp, last, v, v_dt, vrow0 + u0 * VLEN, a->v.pos, u0, nv, acc);
          } else {
            for (int hb = 0; hb < nb; hb++) {
              for (int64_t u0 = 0; u0 < nv; u0 += 8) {
                int64_t nu = nv - u0 < 8 ? nv - u0 : 8;
                const float *w = scores + hb * kp;
                vf *au = acc + hb * nv + u0;
                if (nu == 8)
                  weighted_rows_8(w, last, v, v_dt, vrow0 + u0 * VLEN, a->v.pos, au);
                else if (nu == 4)
                  weighted_rows_4(w, last, v, v_dt, vrow0 + u0 * VLEN, a->v.pos, au);
                else
                  weighted_rows(w, last, v, v_dt, vrow0 + u0 * VLEN, a->v.pos, nu, au);
              }
            }
          }
          for (int hb = 0; hb < nb; hb++) {
            int64_t row = (b * queries + i) * hq + h0 + hb;
            float *o = out + row * vd;
            if (sums[hb] == 0.0f) {
              for (int64_t d = 0; d < vd; d++) o[d] = 0.0f;
              if (has_lse) lse[row] = INFINITY;
              continue;
            }
            vf inv = vbroadcast(1.0f / sums[hb]);
            for (int64_t u = 0; u < nv; u++) vstore(o + u * VLEN, acc[hb * nv + u] * inv);
            if (has_lse) lse[row] = maxes[hb] + logf(sums[hb]);
          }
          h0 += nb;
        }
      }
    }
    free(scores);
    free(qrows);
    free(visible);
  }
  free(kt);
  return failed ? -1 : 1;
}

/*
 * params: batch, queries, q_heads, kv_heads, head_dim, value_dim, keys, causal, scale, query_offset,
 *   q: dtype, offset, strides batch/seq/head; k: same; v: same;
 *   mask: present, dtype, offset, batch_stride, key_stride; seq: same; has lse, out offset, lse offset.
 */
EXPORT int nt_attention(const double *params, const void *q, const void *k, const void *v, const void *mask, const void *seq, float *out, float *lse) {
  const att_params parsed = att_read_params(params), *a = &parsed;
  int64_t batch = a->batch, queries = a->queries, hq = a->hq, hkv = a->hkv, hd = a->hd, vd = a->vd, keys = a->keys, qoff = a->qoff;
  int causal = a->causal;
  float scale = a->scale;
  int q_dt = a->q.dtype, k_dt = a->k.dtype, v_dt = a->v.dtype;
  int has_mask = a->mask.present, m_dt = a->mask.dtype, has_seq = a->seq.present, s_dt = a->seq.dtype;
  int has_lse = (int)params[35];
  out += (int64_t)params[36];
  if (lse) lse += (int64_t)params[37];
  int prefill = attention_prefill(a, has_lse, q, k, v, mask, seq, out, lse);
  if (prefill != 0) return prefill < 0 ? -1 : 0;
  int64_t group = hq / hkv;
  size_t esize_k = k_dt == DT_BF16 ? 2 : 4;
  int failed = 0;
#pragma omp parallel if (batch * queries * hq * keys * (hd + vd) >= PARALLEL_MIN_WORK)
  {
    float *scores = malloc(sizeof(float) * (size_t)(keys > 0 ? keys : 1));
    float *qrow = malloc(sizeof(float) * (size_t)(hd > 0 ? hd : 1));
    float *acc = malloc(sizeof(float) * (size_t)(vd > 0 ? vd : 1));
#pragma omp for schedule(dynamic, 4) collapse(2)
    for (int64_t b = 0; b < batch; b++) {
      for (int64_t i = 0; i < queries; i++) {
        if (!scores || !qrow || !acc) {
#pragma omp atomic write
          failed = 1;
          continue;
        }
        int64_t pos = qoff + i;
        float own = has_seq ? readf(seq, s_dt, att_key(&a->seq, b, pos)) : 0.0f;
        for (int64_t h = 0; h < hq; h++) {
          int64_t g = h / group;
          int64_t qb = att_at(&a->q, b, i, h);
          for (int64_t d = 0; d < hd; d++) qrow[d] = readf(q, q_dt, qb + d) * scale;
          float max = -INFINITY;
          int64_t last = causal && pos + 1 < keys ? pos + 1 : keys;
          for (int64_t j = 0; j < last; j++) {
            int vis = 1;
            if (has_mask) vis = readf(mask, m_dt, att_key(&a->mask, b, j)) != 0.0f;
            if (vis && has_seq) vis = readf(seq, s_dt, att_key(&a->seq, b, j)) == own;
            if (!vis) {
              scores[j] = -INFINITY;
              continue;
            }
            int64_t kb = att_at(&a->k, b, j, g);
            float s = dot(qrow, (const char *)k + kb * esize_k, k_dt, hd);
            scores[j] = s;
            if (s > max) max = s;
          }
          for (int64_t d = 0; d < vd; d++) acc[d] = 0.0f;
          float sum = 0.0f;
          if (max > -INFINITY) {
            for (int64_t j = 0; j < last; j++) {
              if (scores[j] == -INFINITY) continue;
              float w = expf(scores[j] - max);
              sum += w;
              int64_t vb = att_at(&a->v, b, j, g);
              if (v_dt == DT_F32) {
                const float *vr = (const float *)v + vb;
                for (int64_t d = 0; d < vd; d++) acc[d] += w * vr[d];
              } else {
                for (int64_t d = 0; d < vd; d++) acc[d] += w * readf(v, v_dt, vb + d);
              }
            }
          }
          int64_t row = (b * queries + i) * hq + h;
          for (int64_t d = 0; d < vd; d++) out[row * vd + d] = sum > 0.0f ? acc[d] / sum : 0.0f;
          if (has_lse) lse[row] = sum > 0.0f ? max + logf(sum) : INFINITY;
        }
      }
    }
    free(scores);
    free(qrow);
    free(acc);
  }
  return failed ? -1 : 0;
}
