/*
 * MoE for the native CPU backend: sigmoid top-k routing (and its backward), and the routed ReLU²
 * experts (and their backward) run grouped by expert.
 *
 * Routing follows moe-route.cpu.ts exactly (f64 scores, the same selection order: descending biased
 * score, lower index on ties, NaN ranked highest), so the chosen experts match the reference.
 *
 * Experts: a counting sort of the (token, slot) pairs by expert (stable, so each expert's rows keep
 * token order), then per expert with rows: gather its tokens' x rows, one GEMM through the up
 * weight, bias and relu², one GEMM through the down weight (nt_gemm: the system BLAS for many rows,
 * our GEMV for a few), whose rows are then added into their tokens' outputs, experts in order, so
 * the result does not depend on thread timing and the buffers hold one expert's rows, not every
 * pair's. A decode step (every expert at most one row) runs all its experts' GEMVs in one parallel
 * region and reads only the chosen experts' weights. The backward runs the same groups: dW = Gᵀ·H
 * per expert, dx rows added per token.
 */
#include "native.h"

#include <math.h>
#include <stdlib.h>

int nt_gemm(const double *params, const void *a_data, const void *b_data, const void *bias_data, float *c_data);


static inline float load_float(const void *data, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)data)[i]) : ((const float *)data)[i];
}

/* relu(a)², keeping a NaN (Math.max(a, 0) ** 2 in the reference). */
static inline float relu2(float a) { return a > 0.0f ? a * a : (a != a ? a : 0.0f); }
/* d relu(a)²/da = 2·relu(a), NaN kept. */
static inline float relu2_grad(float a) { return a > 0.0f ? 2.0f * a : (a != a ? a : 0.0f); }

/*
 * c [m×n] dense f32 = a · b: a f32 with strides (ars, acs); b f32 or bf16 from `boff` with strides
 * (brs, bcs). Returns nonzero when out of memory.
 */
static int product(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const void *b, int bdtype, int64_t boff, int64_t brs, int64_t bcs,
                   float *c) {
  const double params[20] = {1, (double)m, (double)n, (double)k, DT_F32, 0, 0, (double)ars, (double)acs, bdtype, (double)boff, 0, (double)brs, (double)bcs,
                             0, 0, 0, 0, 0, 0};
  return nt_gemm(params, a, b, NULL, c);
}

/* ---------------------------------------------------------------- routing */

/* True when (v1, i1) comes before (v2, i2): higher first, lower index on ties, NaN above everything. */
static inline int ranks_before(double v1, int i1, double v2, int i2) {
  int n1 = v1 != v1, n2 = v2 != v2;
  if (n1 || n2) return n1 && (!n2 || i1 < i2);
  return v1 > v2 || (v1 == v2 && i1 < i2);
}

/* The first `count` of [start, end) in selection order (items with allowed[i] == 0 skipped); 0 when too few. */
static int pick_in_order(int count, int start, int end, const double *value, const uint8_t *allowed, int *out) {
  for (int j = 0; j < count; j++) {
    int best = -1;
    double best_value = 0;
    for (int i = start; i < end; i++) {
      if (allowed && !allowed[i]) continue;
      double v = value[i];
      if (j > 0 && !ranks_before(value[out[j - 1]], out[j - 1], v, i)) continue;
      if (best < 0 || ranks_before(v, i, best_value, best)) {
        best = i;
        best_value = v;
      }
    }
    if (best < 0) return 0;
    out[j] = best;
  }
  return 1;
}

/*
 * One token's routing from its router logits row (`ldt`, starting at `loff`): writes its k weights
 * and expert indices. Shared with the whole-step decode (decode.c). Returns 0, or -1 when a
 * selection ran short.
 */
int nt_moe_route_token(const moe_route_config *c, const void *logits, int ldt, int64_t loff, const void *bias, int bdt, int64_t boff, float *weights,
                       int32_t *indices) {
  int experts = c->experts, k = c->k, n_group = c->n_group, topk_group = c->topk_group;
  if (experts > MAX_EXPERTS || k > experts || n_group > experts || n_group < 1) return -1;
  int group_size = experts / n_group;
  double score[MAX_EXPERTS], selection[MAX_EXPERTS], group_score[MAX_EXPERTS];
  uint8_t allowed[MAX_EXPERTS];
  int chosen[MAX_EXPERTS], top[MAX_EXPERTS];
  for (int e = 0; e < experts; e++) {
    score[e] = 1.0 / (1.0 + exp(-(double)load_float(logits, ldt, loff + e)));
    selection[e] = score[e] + (bias ? (double)load_float(bias, bdt, boff + e) : 0.0);
  }
  const uint8_t *mask = NULL;
  int failed = 0;
  if (n_group > 1) {
    for (int g = 0; g < n_group; g++) {
      int top2[2];
      if (!pick_in_order(2, g * group_size, (g + 1) * group_size, selection, NULL, top2)) return -1;
      group_score[g] = selection[top2[0]] + selection[top2[1]];
    }
    memset(allowed, 0, (size_t)experts);
    if (!pick_in_order(topk_group, 0, n_group, group_score, NULL, top)) failed = 1;
    else
      for (int j = 0; j < topk_group; j++) memset(allowed + top[j] * group_size, 1, (size_t)group_size);
    mask = allowed;
  }
  if (failed || !pick_in_order(k, 0, experts, selection, mask, chosen)) return -1;
  double total = 0;
  for (int j = 0; j < k; j++) total += score[chosen[j]];
  for (int j = 0; j < k; j++) {
    double s = c->norm ? score[chosen[j]] / (total + 1e-20) : score[chosen[j]];
    weights[j] = (float)(s * c->scale);
    indices[j] = chosen[j];
  }
  return 0;
}

/*
 * params: tokens, experts, k, n_group, topk_group, norm_topk_prob, routed_scaling_factor,
 *   logits dtype, logits offset, has bias, bias dtype, bias offset, weights offset, indices offset.
 * Writes weights [T, k] f32 and indices [T, k] i32. Returns 0, or -1 when a selection ran short.
 */
EXPORT int nt_moe_route(const double *params, const void *logits, const void *bias, float *weights, int32_t *indices) {
  int64_t tokens = (int64_t)params[0];
  moe_route_config c = {(int)params[1], (int)params[2], (int)params[3], (int)params[4], (int)params[5], params[6]};
  int ldt = (int)params[7];
  int64_t loff = (int64_t)params[8];
  int has_bias = (int)params[9], bdt = (int)params[10];
  int64_t boff = (int64_t)params[11];
  weights += (int64_t)params[12];
  indices += (int64_t)params[13];
  if (c.experts > MAX_EXPERTS || c.k > c.experts || c.n_group > c.experts) return -1;
  int failed = 0;
#pragma omp parallel for schedule(static) if (tokens * c.experts * c.k >= PARALLEL_MIN_WORK)
  for (int64_t t = 0; t < tokens; t++)
    if (nt_moe_route_token(&c, logits, ldt, loff + t * c.experts, has_bias ? bias : NULL, bdt, boff, weights + t * c.k, indices + t * c.k)) failed = 1;
  return failed ? -1 : 0;
}

/*
 * params: tokens, experts, k, norm_topk_prob, routed_scaling_factor, logits dtype, logits offset,
 *   indices offset, grad offset (f32), out offset. Writes the router logits' gradient [T, E] f32.
 */
EXPORT int nt_moe_route_backward(const double *params, const void *logits, const int32_t *indices, const float *grad, float *out) {
  int64_t tokens = (int64_t)params[0];
  int experts = (int)params[1], k = (int)params[2], norm = (int)params[3];
  double scale = params[4];
  int ldt = (int)params[5];
  int64_t loff = (int64_t)params[6];
  indices += (int64_t)params[7];
  grad += (int64_t)params[8];
  out += (int64_t)params[9];
  if (k > MAX_EXPERTS) return -1;
#pragma omp parallel for schedule(static) if (tokens * experts >= PARALLEL_MIN_WORK)
  for (int64_t t = 0; t < tokens; t++) {
    double score[MAX_EXPERTS];
    float *row = out + t * experts;
    memset(row, 0, sizeof(float) * (size_t)experts);
    double total = 0, weighted = 0;
    for (int j = 0; j < k; j++) {
      int e = indices[t * k + j];
      score[j] = 1.0 / (1.0 + exp(-(double)load_float(logits, ldt, loff + t * experts + e)));
      total += score[j];
      weighted += (double)grad[t * k + j] * score[j];
    }
    double denom = total + 1e-20;
    for (int j = 0; j < k; j++) {
      double gj = grad[t * k + j];
      /* w_j = c·s_j/(Σs + ε): ∂L/∂s_j = c·(g_j − Σ_i g_i·s_i/(Σs + ε))/(Σs + ε). */
      double gs = norm ? scale * (gj - weighted / denom) / denom : scale * gj;
      row[indices[t * k + j]] = (float)(gs * score[j] * (1 - score[j]));
    }
  }
  return 0;
}

/* ---------------------------------------------------------------- experts */

typedef struct {
  int64_t tokens, hin, slots, experts, inter, hout;
  const void *x, *weights, *up, *down, *up_bias, *down_bias;
  int xdt, wdt, updt, downdt, ubdt, dbdt;
  int64_t xoff, woff, upoff, downoff, uboff, dboff;
  const int32_t *indices;
} moe_operands;

typedef struct {
  /* start[e]..start[e+1]: expert e's rows in `pair` (pair ids t·k + s, ascending); pos[pair id] = row. */
  int64_t *start;
  int64_t *pair;
  int64_t *pos;
  int64_t max_rows;
} moe_groups;

/*
 * params: tokens, hin, slots, experts, inter, hout,
 *   x dtype, x offset, indices offset, weights dtype, weights offset,
 *   up dtype, up offset, down dtype, down offset,
 *   has up bias, up bias dtype, up bias offset, has down bias, down bias dtype, down bias offset.
 */
static moe_operands read_operands(const double *p, const void *x, const int32_t *indices, const void *weights, const void *up, const void *down,
                                  const void *up_bias, const void *down_bias) {
  moe_operands o = {
      .tokens = (int64_t)p[0],
      .hin = (int64_t)p[1],
      .slots = (int64_t)p[2],
      .experts = (int64_t)p[3],
      .inter = (int64_t)p[4],
      .hout = (int64_t)p[5],
      .x = x,
      .xdt = (int)p[6],
      .xoff = (int64_t)p[7],
      .indices = indices + (int64_t)p[8],
      .weights = weights,
      .wdt = (int)p[9],
      .woff = (int64_t)p[10],
      .up = up,
      .updt = (int)p[11],
      .upoff = (int64_t)p[12],
      .down = down,
      .downdt = (int)p[13],
      .downoff = (int64_t)p[14],
      .up_bias = p[15] != 0 ? up_bias : NULL,
      .ubdt = (int)p[16],
      .uboff = (int64_t)p[17],
      .down_bias = p[18] != 0 ? down_bias : NULL,
      .dbdt = (int)p[19],
      .dboff = (int64_t)p[20],
  };
  return o;
}

static void free_groups(moe_groups *g) {
  free(g->start);
  free(g->pair);
  free(g->pos);
}

/*
 * Counting sort of the pairs by expert. Returns 0; 1 + the first pair whose expert is out of
 * range (nothing allocated then); -1 when out of memory.
 */
static int64_t group_pairs(const moe_operands *o, moe_groups *g) {
  int64_t pairs = o->tokens * o->slots;
  for (int64_t q = 0; q < pairs; q++)
    if (o->indices[q] < 0 || o->indices[q] >= o->experts) return q + 1;
  g->start = calloc((size_t)o->experts + 1, sizeof(int64_t));
  g->pair = malloc(sizeof(int64_t) * (size_t)(pairs + 1));
  g->pos = malloc(sizeof(int64_t) * (size_t)(pairs + 1));
  if (!g->start || !g->pair || !g->pos) {
    free_groups(g);
    return -1;
  }
  for (int64_t q = 0; q < pairs; q++) g->start[o->indices[q] + 1]++;
  g->max_rows = 0;
  for (int64_t e = 0; e < o->experts; e++) {
    if (g->start[e + 1] > g->max_rows) g->max_rows = g->start[e + 1];
    g->start[e + 1] += g->start[e];
  }
  int64_t *fill = malloc(sizeof(int64_t) * (size_t)(o->experts + 1));
  if (!fill) {
    free_groups(g);
    return -1;
  }
  memcpy(fill, g->start, sizeof(int64_t) * (size_t)o->experts);
  for (int64_t q = 0; q < pairs; q++) {
    int64_t row = fill[o->indices[q]]++;
    g->pair[row] = q;
    g->pos[q] = row;
  }
  free(fill);
  return 0;
}

/* The x rows of expert e's pairs, as dense f32 [rows, hin]. */
static void gather_x(const moe_operands *o, const moe_groups *g, int64_t e, float *dst) {
  int64_t r0 = g->start[e], rows = g->start[e + 1] - r0;
#pragma omp parallel for schedule(static) if (rows * o->hin >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = g->pair[r0 + r] / o->slots;
    float *d = dst + r * o->hin;
    if (o->xdt == DT_F32) memcpy(d, (const float *)o->x + o->xoff + t * o->hin, sizeof(float) * (size_t)o->hin);
    else
      for (int64_t j = 0; j < o->hin; j++) d[j] = load_float(o->x, o->xdt, o->xoff + t * o->hin + j);
  }
}

/*
 * pre [rows, inter] = x_e · up_eᵀ + b_up and, when `hidden` is given, hidden = relu(pre)²
 * (in place when hidden == pre). Returns nonzero when out of memory.
 */
static int up_projection(const moe_operands *o, int64_t e, int64_t rows, const float *xg, float *pre, float *hidden) {
  if (product(rows, o->inter, o->hin, xg, o->hin, 1, o->up, o->updt, o->upoff + e * o->inter * o->hin, 1, o->hin, pre)) return 1;
#pragma omp parallel for schedule(static) if (rows * o->inter >= PARALLEL_MIN_WORK)
  for (int64_t r = 0; r < rows; r++) {
    for (int64_t i = 0; i < o->inter; i++) {
      float a = pre[r * o->inter + i];
      if (o->up_bias) a += load_float(o->up_bias, o->ubdt, o->uboff + e * o->inter + i);
      pre[r * o->inter + i] = a;
      if (hidden) hidden[r * o->inter + i] = relu2(a);
    }
  }
  return 0;
}

/* y [rows, hout] = hidden · down_eᵀ + b_down. Returns nonzero when out of memory. */
static int down_projection(const moe_operands *o, int64_t e, int64_t rows, const float *hidden, float *y) {
  if (product(rows, o->hout, o->inter, hidden, o->inter, 1, o->down, o->downdt, o->downoff + e * o->hout * o->inter, 1, o->inter, y)) return 1;
  if (o->down_bias) {
    for (int64_t r = 0; r < rows; r++)
      for (int64_t n = 0; n < o->hout; n++) y[r * o->hout + n] += load_float(o->down_bias, o->dbdt, o->dboff + e * o->hout + n);
  }
  return 0;
}

/* x · w for f32 x and one weight row (f32 or bf16) of k contiguous elements from `off`. */
static inline float dot_row(const float *x, const void *w, int wdt, int64_t off, int64_t k) {
  vf s0 = {0}, s1 = {0};
  int64_t p = 0;
  if (wdt == DT_BF16) {
    const uint16_t *wr = (const uint16_t *)w + off;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      s0 += vload(x + p) * vload_bf16(wr + p);
      s1 += vload(x + p + VLEN) * vload_bf16(wr + p + VLEN);
    }
  } else {
    const float *wr = (const float *)w + off;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      s0 += vload(x + p) * vload(wr + p);
      s1 += vload(x + p + VLEN) * vload(wr + p + VLEN);
    }
  }
  float r = vsum(s0 + s1);
  for (; p < k; p++) r += x[p] * load_float(w, wdt, off + p);
  return r;
}

/*
 * Decode (each expert has at most one row): the pairs' up and down GEMVs in one parallel region, so
 * a step wakes the threads once instead of twice per expert. Writes y [pairs, hout] by row.
 */
static void single_row_experts(const moe_operands *o, const moe_groups *g, float *xg, float *hidden, float *y) {
  int64_t rows = o->tokens * o->slots;
  for (int64_t r = 0; r < rows; r++) {
    int64_t t = g->pair[r] / o->slots;
    for (int64_t j = 0; j < o->hin; j++) xg[r * o->hin + j] = load_float(o->x, o->xdt, o->xoff + t * o->hin + j);
  }
#pragma omp parallel if (rows * o->inter * (o->hin + o->hout) >= PARALLEL_MIN_WORK)
  {
#pragma omp for schedule(static)
    for (int64_t ri = 0; ri < rows * o->inter; ri++) {
      int64_t r = ri / o->inter, i = ri % o->inter, e = o->indices[g->pair[r]];
      float a = dot_row(xg + r * o->hin, o->up, o->updt, o->upoff + (e * o->inter + i) * o->hin, o->hin);
      if (o->up_bias) a += load_float(o->up_bias, o->ubdt, o->uboff + e * o->inter + i);
      hidden[ri] = relu2(a);
    }
#pragma omp for schedule(static)
    for (int64_t rn = 0; rn < rows * o->hout; rn++) {
      int64_t r = rn / o->hout, n = rn % o->hout, e = o->indices[g->pair[r]];
      float v = dot_row(hidden + r * o->inter, o->down, o->downdt, o->downoff + (e * o->hout + n) * o->inter, o->inter);
      if (o->down_bias) v += load_float(o->down_bias, o->dbdt, o->dboff + e * o->hout + n);
      y[rn] = v;
    }
  }
}

/*
 * out [T, hout] f32 (from out offset params[21]) = Σ_s w[t,s] · expert_e(x_t). Returns 0; 1 + the
 * first pair (t·k + s) whose expert is out of range; -1 when out of memory.
 */
EXPORT double nt_moe_experts(const double *params, const void *x, const int32_t *indices, const void *weights, const void *up, const void *down,
                              const void *up_bias, const void *down_bias, float *out) {
  moe_operands o = read_operands(params, x, indices, weights, up, down, up_bias, down_bias);
  out += (int64_t)params[21];
  moe_groups g;
  int64_t rc = group_pairs(&o, &g);
  if (rc != 0) return (double)rc;
  int64_t pairs = o.tokens * o.slots;
  /* Every expert with at most one row (decode): all pairs at once, see single_row_experts. */
  int single = g.max_rows == 1;
  int64_t buffered = single ? pairs : g.max_rows;
  float *xg = malloc(sizeof(float) * (size_t)(buffered * o.hin + 1));
  float *hidden = malloc(sizeof(float) * (size_t)(buffered * o.inter + 1));
  float *y = malloc(sizeof(float) * (size_t)(buffered * o.hout + 1));
  int failed = !xg || !hidden || !y;
  if (!failed && single) {
    /* Each token's slots in slot order. */
    single_row_experts(&o, &g, xg, hidden, y);
    for (int64_t t = 0; t < o.tokens; t++) {
      float *dst = out + t * o.hout;
      memset(dst, 0, sizeof(float) * (size_t)o.hout);
      for (int64_t s = 0; s < o.slots; s++) {
        int64_t q = t * o.slots + s;
        float w = load_float(o.weights, o.wdt, o.woff + q);
        const float *src = y + g.pos[q] * o.hout;
        for (int64_t n = 0; n < o.hout; n++) dst[n] += w * src[n];
      }
    }
  } else if (!failed) {
    /* Each expert's rows added into their tokens' outputs, experts in order (deterministic). */
    memset(out, 0, sizeof(float) * (size_t)(o.tokens * o.hout));
    for (int64_t e = 0; e < o.experts && !failed; e++) {
      int64_t r0 = g.start[e], rows = g.start[e + 1] - r0;
      if (rows == 0) continue;
      gather_x(&o, &g, e, xg);
      failed = up_projection(&o, e, rows, xg, hidden, hidden) || down_projection(&o, e, rows, hidden, y);
      for (int64_t r = 0; r < rows && !failed; r++) {
        int64_t q = g.pair[r0 + r];
        float w = load_float(o.weights, o.wdt, o.woff + q);
        float *dst = out + q / o.slots * o.hout;
        const float *src = y + r * o.hout;
        for (int64_t n = 0; n < o.hout; n++) dst[n] += w * src[n];
      }
    }
  }
  free(xg);
  free(hidden);
  free(y);
  free_groups(&g);
  return failed ? -1 : 0;
}

/*
 * Gradients of nt_moe_experts from grad [T, hout] (f32, offset params[21]) into the dense f32 outputs
 * that are not NULL (each from offset 0): gx [T, hin], gw [T, k], gup [E, inter, hin],
 * gdown [E, hout, inter], gub [E, inter], gdb [E, hout]. Same return codes as nt_moe_experts.
 *
 * Per expert, with G its pairs' upstream rows (unweighted) and w their weights: gh = G·down_e gives
 * gw = gh·hidden + G·b_down (the expert's output dotted with g, without recomputing it) and
 * ga = w·gh ⊙ 2·relu(pre); gdown_e = Gᵀ·(w∘hidden), gup_e = gaᵀ·x_e, the pairs' dx rows = ga·up_e.
 */
EXPORT double nt_moe_experts_backward(const double *params, const void *x, const int32_t *indices, const void *weights, const void *up, const void *down,
                                      const void *up_bias, const void *down_bias, const float *grad, float *gx, float *gw, float *gup, float *gdown,
                                      float *gub, float *gdb) {
  moe_operands o = read_operands(params, x, indices, weights, up, down, up_bias, down_bias);
  grad += (int64_t)params[21];
  moe_groups g;
  int64_t rc = group_pairs(&o, &g);
  if (rc != 0) return (double)rc;
  int64_t maxr = g.max_rows;
  int need_ga = gx || gup || gub; /* the gradient through the up projection */
  int need_gh = need_ga || gw;
  float *xg = malloc(sizeof(float) * (size_t)(maxr * o.hin + 1));
  float *pre = malloc(sizeof(float) * (size_t)(maxr * o.inter + 1));
  float *hidden = malloc(sizeof(float) * (size_t)(maxr * o.inter + 1));
  float *gh = malloc(sizeof(float) * (size_t)(maxr * o.inter + 1));
  float *gg = malloc(sizeof(float) * (size_t)(maxr * o.hout + 1));
  float *gxe = gx ? malloc(sizeof(float) * (size_t)(maxr * o.hin + 1)) : NULL;
  int failed = !xg || !pre || !hidden || !gh || !gg || (gx && !gxe);
  if (gx) memset(gx, 0, sizeof(float) * (size_t)(o.tokens * o.hin));
  for (int64_t e = 0; e < o.experts && !failed; e++) {
    int64_t r0 = g.start[e], rows = g.start[e + 1] - r0;
    if (rows == 0) {
      /* An expert without tokens: zero weight gradients (the outputs start uninitialised). */
      if (gup) memset(gup + e * o.inter * o.hin, 0, sizeof(float) * (size_t)(o.inter * o.hin));
      if (gdown) memset(gdown + e * o.hout * o.inter, 0, sizeof(float) * (size_t)(o.hout * o.inter));
      if (gub) memset(gub + e * o.inter, 0, sizeof(float) * (size_t)o.inter);
      if (gdb) memset(gdb + e * o.hout, 0, sizeof(float) * (size_t)o.hout);
      continue;
    }
    gather_x(&o, &g, e, xg);
    for (int64_t r = 0; r < rows; r++) memcpy(gg + r * o.hout, grad + g.pair[r0 + r] / o.slots * o.hout, sizeof(float) * (size_t)o.hout);
    if (up_projection(&o, e, rows, xg, pre, hidden) ||
        (need_gh && product(rows, o.inter, o.hout, gg, o.hout, 1, o.down, o.downdt, o.downoff + e * o.hout * o.inter, o.inter, 1, gh))) {
      failed = 1;
      break;
    }
    /* gw, then hidden and gh scaled by each pair's weight (w∘hidden for gdown, w·gh for ga). */
#pragma omp parallel for schedule(static) if (rows * (o.inter + o.hout) >= PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
      int64_t q = g.pair[r0 + r];
      float w = load_float(o.weights, o.wdt, o.woff + q);
      float *hr = hidden + r * o.inter, *ghr = gh + r * o.inter;
      if (gw) {
        float dot = 0.0f;
        for (int64_t i = 0; i < o.inter; i++) dot += ghr[i] * hr[i];
        if (o.down_bias)
          for (int64_t n = 0; n < o.hout; n++) dot += gg[r * o.hout + n] * load_float(o.down_bias, o.dbdt, o.dboff + e * o.hout + n);
        gw[q] = dot;
      }
      for (int64_t i = 0; i < o.inter; i++) hr[i] *= w;
      if (need_ga)
        for (int64_t i = 0; i < o.inter; i++) ghr[i] *= w * relu2_grad(pre[r * o.inter + i]);
    }
    if (gdb) {
      float *d = gdb + e * o.hout;
      memset(d, 0, sizeof(float) * (size_t)o.hout);
      for (int64_t r = 0; r < rows; r++) {
        float w = load_float(o.weights, o.wdt, o.woff + g.pair[r0 + r]);
        for (int64_t n = 0; n < o.hout; n++) d[n] += w * gg[r * o.hout + n];
      }
    }
    /* gdown_e [hout, inter] = Gᵀ · (w∘hidden). */
    if (gdown && product(o.hout, o.inter, rows, gg, 1, o.hout, hidden, DT_F32, 0, o.inter, 1, gdown + e * o.hout * o.inter)) failed = 1;
    if (!need_ga || failed) continue;
    if (gub) {
      float *d = gub + e * o.inter;
      memset(d, 0, sizeof(float) * (size_t)o.inter);
      for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < o.inter; i++) d[i] += gh[r * o.inter + i];
    }
    /* gup_e [inter, hin] = gaᵀ · x_e; the pairs' dx rows = ga · up_e. */
    if (gup && product(o.inter, o.hin, rows, gh, 1, o.inter, xg, DT_F32, 0, o.hin, 1, gup + e * o.inter * o.hin)) failed = 1;
    if (!gx || failed) continue;
    if (product(rows, o.hin, o.inter, gh, o.inter, 1, o.up, o.updt, o.upoff + e * o.inter * o.hin, o.hin, 1, gxe)) {
      failed = 1;
      break;
    }
    for (int64_t r = 0; r < rows; r++) {
      float *dst = gx + g.pair[r0 + r] / o.slots * o.hin;
      for (int64_t j = 0; j < o.hin; j++) dst[j] += gxe[r * o.hin + j];
    }
  }
  free(xg);
  free(pre);
  free(hidden);
  free(gh);
  free(gg);
  free(gxe);
  free_groups(&g);
  return failed ? -1 : 0;
}
