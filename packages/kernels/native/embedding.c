/*
 * Gradient of an embedding lookup: out[id] += Σ g[j] over the positions j whose id is `id`, summed
 * in position order (deterministic, as the reference and the WebGPU scatter). Positions are bucketed
 * by id with a counting sort, then the touched rows are split across threads. Ids outside [0, vocab)
 * are skipped (the forward already refused them on the host).
 */
#include "native.h"

#include <stdlib.h>

/* params: n ids, vocab, hidden, ids offset, g offset (dense [n][hidden] f32), out offset (dense [vocab][hidden] f32). */
EXPORT int nt_embedding_backward(const double *params, const int32_t *ids, const float *g, float *out) {
  int64_t n = (int64_t)params[0], vocab = (int64_t)params[1], hidden = (int64_t)params[2];
  ids += (int64_t)params[3];
  g += (int64_t)params[4];
  out += (int64_t)params[5];
  int64_t *start = calloc((size_t)vocab + 1, sizeof(int64_t));
  int64_t *order = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  int64_t *touched = malloc(sizeof(int64_t) * (size_t)(n > 0 ? n : 1));
  if (!start || !order || !touched) {
    free(start);
    free(order);
    free(touched);
    return -1;
  }
  for (int64_t j = 0; j < n; j++)
    if (ids[j] >= 0 && ids[j] < vocab) start[ids[j] + 1]++;
  int64_t rows = 0;
  for (int64_t v = 0; v < vocab; v++) {
    if (start[v + 1] > 0) touched[rows++] = v;
    start[v + 1] += start[v];
  }
  /* Stable placement: positions of each id stay in increasing order. */
  for (int64_t j = 0; j < n; j++)
    if (ids[j] >= 0 && ids[j] < vocab) order[start[ids[j]]++] = j;
  /* start[v] now ends bucket v; bucket v begins where bucket v - 1 ended. */
#pragma omp parallel for schedule(dynamic, 8) if (n * hidden >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < rows; r++) {
    int64_t v = touched[r];
    int64_t end = start[v], begin = v > 0 ? start[v - 1] : 0;
    float *dst = out + v * hidden;
    for (int64_t q = begin; q < end; q++) {
      const float *src = g + order[q] * hidden;
      for (int64_t c = 0; c < hidden; c++) dst[c] += src[c];
    }
  }
  free(start);
  free(order);
  free(touched);
  return 0;
}
