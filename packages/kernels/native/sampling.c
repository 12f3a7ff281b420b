/*
 * Token choice (ops/sampling): the TypeScript reference's processors and draw, row by row, with
 * the same arithmetic (f32 scores, f64 probabilities, the same summation orders), so both choose
 * the same token. What changes is the cost: the reference sorts the whole vocabulary with a
 * comparator for top-k and top-p (25–75 ms a row at a 131072-token vocabulary); here top-k keeps a
 * heap of the k largest in one pass and top-p radix-sorts the surviving tokens.
 */
#include "native.h"

#include <math.h>
#include <stdlib.h>

enum { NON_FINITE_TOKEN = -1 };

/* The host twin's hash (counter-random.ts): a uniform in [0, 1) with 24 random bits. */
static uint32_t mix32(uint32_t h) {
  h = (h ^ (h >> 16)) * 0x7feb352du;
  h = (h ^ (h >> 15)) * 0x846ca68bu;
  return h ^ (h >> 16);
}
static double uniform_hash(uint32_t seed, uint32_t row, uint32_t counter) {
  uint32_t h = mix32(mix32(mix32(seed) ^ (row * 0x9e3779b9u)) ^ (counter * 0x85ebca6bu));
  return (double)(h >> 8) / 16777216.0;
}

/* A float's bits mapped so that unsigned order is descending value order (no NaN here; -0 lands next to +0, in the same top-p group). */
static inline uint32_t descending_key(float v) {
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u); /* ascending */
  return ~u;
}

/*
 * Sorts idx[0..n) by s descending, ties in ascending index (a stable LSD radix sort over 8-bit
 * digits of the keys; idx comes in ascending). tmp: n more indices, keys: 2n.
 */
static void sort_descending(const float *s, int32_t *idx, int32_t *tmp, uint32_t *keys, int64_t n) {
  if (n < 2) return;
  uint32_t *k0 = keys, *k1 = keys + n;
  for (int64_t i = 0; i < n; i++) k0[i] = descending_key(s[idx[i]]);
  for (int shift = 0; shift < 32; shift += 8) {
    int64_t count[257] = {0};
    for (int64_t i = 0; i < n; i++) count[((k0[i] >> shift) & 255) + 1]++;
    if (count[((k0[0] >> shift) & 255) + 1] == n) continue; /* one digit value: already in order */
    for (int d = 0; d < 256; d++) count[d + 1] += count[d];
    for (int64_t i = 0; i < n; i++) {
      int64_t at = count[(k0[i] >> shift) & 255]++;
      tmp[at] = idx[i];
      k1[at] = k0[i];
    }
    memcpy(idx, tmp, sizeof(int32_t) * (size_t)n);
    uint32_t *t = k0;
    k0 = k1;
    k1 = t;
  }
}

/* The k-th largest of s[0..n) (1-based, duplicates counted): a min-heap of the k largest, one pass. */
static float kth_largest(const float *s, int64_t n, int64_t k, float *heap) {
  for (int64_t i = 0; i < n; i++) {
    float v = s[i];
    int64_t at;
    if (i < k) {
      for (at = i; at > 0 && heap[(at - 1) / 2] > v; at = (at - 1) / 2) heap[at] = heap[(at - 1) / 2];
    } else {
      if (!(v > heap[0])) continue;
      for (at = 0;;) {
        int64_t c = 2 * at + 1;
        if (c >= k) break;
        if (c + 1 < k && heap[c + 1] < heap[c]) c++;
        if (!(heap[c] < v)) break;
        heap[at] = heap[c];
        at = c;
      }
    }
    heap[at] = v;
  }
  return heap[0];
}

/*
 * params: 0 rows, 1 vocab, 2 logits dtype, 3 logits offset, 4 do_sample, 5 temperature, 6 top_k
 * (0 = off, < vocab), 7 top_p, 8 min_p, 9 penalty (1 = off), 10 seed (u32), 11 counter (u32, the
 * draw's), 12 seen offset (i32 [rows, vocab]; seen may be a null pointer), 13 out offset (i32 [rows], dense).
 * Returns 0, or -1 when scratch memory runs out.
 */
EXPORT int nt_sample_tokens(const double *params, const void *logits, const int32_t *seen, int32_t *out) {
  int64_t rows = (int64_t)params[0], V = (int64_t)params[1], loff = (int64_t)params[3];
  int dt = (int)params[2], do_sample = (int)params[4];
  double temperature = params[5], top_p = params[7], min_p = params[8], penalty = params[9];
  int64_t top_k = (int64_t)params[6];
  uint32_t seed = (uint32_t)params[10], counter = (uint32_t)params[11];
  if (seen) seen += (int64_t)params[12];
  out += (int64_t)params[13];
  int sorts = do_sample && top_p < 1.0;
  float *s = malloc(sizeof(float) * (size_t)V * (top_k > 0 ? 2 : 1));
  uint8_t *kept = malloc((size_t)V);
  double *w = malloc(sizeof(double) * (size_t)V);
  int32_t *idx = sorts ? malloc(sizeof(int32_t) * (size_t)V * 2) : NULL;
  uint32_t *keys = sorts ? malloc(sizeof(uint32_t) * (size_t)V * 2) : NULL;
  if (!s || !kept || !w || (sorts && (!idx || !keys))) {
    free(s), free(kept), free(w), free(idx), free(keys);
    return -1;
  }
  for (int64_t b = 0; b < rows; b++) {
    /* Scores as the reference: the logit as f32, the penalty and temperature in f64, rounded to f32. */
    int finite = 1;
    int64_t best = 0;
    for (int64_t i = 0; i < V; i++) {
      int64_t at = loff + b * V + i;
      float v = dt == DT_BF16 ? bf16_to_f32(((const uint16_t *)logits)[at]) : ((const float *)logits)[at];
      if (!isfinite(v)) finite = 0;
      if (seen && seen[b * V + i] != 0) v = (float)(v < 0 ? (double)v * penalty : (double)v / penalty);
      if (do_sample) v = (float)((double)v / temperature);
      s[i] = v;
      if (v > s[best]) best = i;
    }
    if (!finite) {
      out[b] = NON_FINITE_TOKEN;
      continue;
    }
    if (!do_sample) {
      out[b] = (int32_t)best;
      continue;
    }
    double m = s[best];
    for (int64_t i = 0; i < V; i++) kept[i] = 1;
    if (top_k > 0 && top_k < V) {
      float kth = kth_largest(s, V, top_k, s + V);
      for (int64_t i = 0; i < V; i++)
        if (s[i] < kth) kept[i] = 0;
    }
    /* Each survivor's probability weight, once (the reference recomputes the same exp each time). */
    for (int64_t i = 0; i < V; i++) w[i] = kept[i] ? exp((double)s[i] - m) : 0.0;
    if (top_p < 1.0) {
      int64_t n = 0;
      for (int64_t i = 0; i < V; i++)
        if (kept[i]) idx[n++] = (int32_t)i;
      sort_descending(s, idx, idx + V, keys, n);
      double total = 0.0, above = 0.0;
      for (int64_t r = 0; r < n; r++) total += w[idx[r]];
      for (int64_t r = 0; r < n;) {
        int64_t end = r;
        double group = 0.0;
        while (end < n && s[idx[end]] == s[idx[r]]) group += w[idx[end++]];
        if (above / total >= top_p)
          for (int64_t q = r; q < end; q++) kept[idx[q]] = 0, w[idx[q]] = 0.0;
        above += group;
        r = end;
      }
    }
    if (min_p > 0.0)
      for (int64_t i = 0; i < V; i++)
        if (kept[i] && w[i] < min_p) kept[i] = 0, w[i] = 0.0;
    double total = 0.0;
    for (int64_t i = 0; i < V; i++) total += w[i];
    double target = uniform_hash(seed, (uint32_t)b, counter) * total, running = 0.0;
    int32_t chosen = -1;
    for (int64_t i = 0; i < V; i++) {
      if (!kept[i]) continue;
      running += w[i];
      chosen = (int32_t)i;
      if (running > target) break;
    }
    out[b] = chosen;
  }
  free(s), free(kept), free(w), free(idx), free(keys);
  return 0;
}
