/*
 * GEMM and GEMV for the native CPU backend: C[b] = A[b] · B[b] (+ bias), f32 out, A and B f32 or
 * bf16, read through arbitrary strides (so transposed and broadcast views need no copy in TS).
 *
 * GEMM packs blocks of A and B into f32 panels (bf16 is widened while packing, so one f32
 * micro-kernel serves both dtypes) and runs an MR×NR register-blocked micro-kernel written with GCC
 * vector extensions: the same source compiles to AVX2/FMA, AVX-512 or NEON for the build host.
 * Threads split the columns (each packs its own B panel; A blocks are small and packed per thread).
 *
 * GEMV (few rows of A, B with K contiguous: the x·Wᵀ layout of every linear layer) streams each
 * weight row once for up to 4 rows of A: decode is bound by the bytes of the weights, and bf16
 * weights halve them. It stays ours even when a BLAS is loaded: in whole-model decode on a shared
 * 2-core machine OpenBLAS's sgemv threads made f32 decode 2.5× slower (14 vs 35 tokens/s, same run).
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

enum { MR = 6, NR = 2 * VLEN, KC = 256, MC = 96 };

typedef struct {
  const void *data;
  int dtype;
  int64_t offset, batch_stride, row_stride, col_stride;
} view_t;

static inline float load_elem(const view_t *v, int64_t i) {
  return v->dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)v->data)[i]) : ((const float *)v->data)[i];
}

/* Packs rows [i0, i0+mc) × k [p0, p0+kc) of A into MR-row slivers: dst[sliver][p][r]. */
static void pack_a(const view_t *a, int64_t base, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float *dst) {
  for (int64_t is = 0; is < mc; is += MR) {
    for (int64_t p = 0; p < kc; p++) {
      for (int r = 0; r < MR; r++) {
        int64_t i = is + r;
        *dst++ = i < mc ? load_elem(a, base + (i0 + i) * a->row_stride + (p0 + p) * a->col_stride) : 0.0f;
      }
    }
  }
}

/* Packs k [p0, p0+kc) × columns [j0, j0+nc) of B into NR-column slivers: dst[sliver][p][c]. */
static void pack_b(const view_t *b, int64_t base, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
  for (int64_t js = 0; js < nc; js += NR) {
    int64_t w = nc - js < NR ? nc - js : NR;
    for (int64_t p = 0; p < kc; p++) {
      int64_t row = base + (p0 + p) * b->row_stride + (j0 + js) * b->col_stride;
      if (b->col_stride == 1 && w == NR) {
        if (b->dtype == DT_F32) memcpy(dst, (const float *)b->data + row, NR * sizeof(float));
        else for (int c = 0; c < NR; c++) dst[c] = bf16_to_f32(((const uint16_t *)b->data)[row + c]);
      } else {
        for (int c = 0; c < NR; c++) dst[c] = c < w ? load_elem(b, row + c * b->col_stride) : 0.0f;
      }
      dst += NR;
    }
  }
}

/* acc[MR][NR] = Σ_p a[p][r] · b[p][c] over a packed sliver pair; written (or added) to c. */
static inline void micro_kernel(int64_t kc, const float *restrict a, const float *restrict b, float *restrict c, int64_t ldc, int mr, int nr, int accumulate) {
  vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
  vf c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  for (int64_t p = 0; p < kc; p++) {
    vf b0 = vload(b), b1 = vload(b + VLEN);
    vf a0 = vbroadcast(a[0]), a1 = vbroadcast(a[1]);
    c00 += a0 * b0; c01 += a0 * b1;
    c10 += a1 * b0; c11 += a1 * b1;
    vf a2 = vbroadcast(a[2]), a3 = vbroadcast(a[3]);
    c20 += a2 * b0; c21 += a2 * b1;
    c30 += a3 * b0; c31 += a3 * b1;
    vf a4 = vbroadcast(a[4]), a5 = vbroadcast(a[5]);
    c40 += a4 * b0; c41 += a4 * b1;
    c50 += a5 * b0; c51 += a5 * b1;
    a += MR;
    b += NR;
  }
  vf rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float *cr = c + r * ldc;
      if (accumulate) {
        vstore(cr, vload(cr) + rows[r][0]);
        vstore(cr + VLEN, vload(cr + VLEN) + rows[r][1]);
      } else {
        vstore(cr, rows[r][0]);
        vstore(cr + VLEN, rows[r][1]);
      }
    }
    return;
  }
  float tile[MR * NR];
  for (int r = 0; r < MR; r++) {
    vstore(tile + r * NR, rows[r][0]);
    vstore(tile + r * NR + VLEN, rows[r][1]);
  }
  for (int r = 0; r < mr; r++)
    for (int q = 0; q < nr; q++) c[r * ldc + q] = (accumulate ? c[r * ldc + q] : 0.0f) + tile[r * NR + q];
}

/* One batch entry, columns [j0, j1): blocked over k and rows, B panel packed once per k block. */
static void gemm_columns(const view_t *a, int64_t abase, const view_t *b, int64_t bbase, float *c, int64_t m, int64_t n, int64_t k,
                         int64_t j0, int64_t j1, float *apack, float *bpack, int accumulate) {
  int64_t nc = j1 - j0;
  for (int64_t p0 = 0; p0 < k; p0 += KC) {
    int64_t kc = k - p0 < KC ? k - p0 : KC;
    pack_b(b, bbase, p0, kc, j0, nc, bpack);
    for (int64_t i0 = 0; i0 < m; i0 += MC) {
      int64_t mc = m - i0 < MC ? m - i0 : MC;
      pack_a(a, abase, i0, mc, p0, kc, apack);
      for (int64_t js = 0; js < nc; js += NR) {
        int nr = nc - js < NR ? (int)(nc - js) : NR;
        for (int64_t is = 0; is < mc; is += MR) {
          int mr = mc - is < MR ? (int)(mc - is) : MR;
          micro_kernel(kc, apack + is * kc, bpack + js * kc, c + (i0 + is) * n + j0 + js, n, mr, nr, accumulate || p0 > 0);
        }
      }
    }
  }
}

/* Dot products of up to 4 f32 rows of x with one weight row (f32 or bf16, K contiguous). */
static inline void dot_rows(const float *x, int64_t ldx, int rows, const void *w, int wdtype, int64_t k, float *out) {
  vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
  vf t0 = {0}, t1 = {0}, t2 = {0}, t3 = {0};
  int64_t p = 0;
  for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
    vf w0, w1;
    if (wdtype == DT_BF16) {
      w0 = vload_bf16((const uint16_t *)w + p);
      w1 = vload_bf16((const uint16_t *)w + p + VLEN);
    } else {
      w0 = vload((const float *)w + p);
      w1 = vload((const float *)w + p + VLEN);
    }
    s0 += vload(x + p) * w0; t0 += vload(x + p + VLEN) * w1;
    if (rows > 1) { s1 += vload(x + ldx + p) * w0; t1 += vload(x + ldx + p + VLEN) * w1; }
    if (rows > 2) { s2 += vload(x + 2 * ldx + p) * w0; t2 += vload(x + 2 * ldx + p + VLEN) * w1; }
    if (rows > 3) { s3 += vload(x + 3 * ldx + p) * w0; t3 += vload(x + 3 * ldx + p + VLEN) * w1; }
  }
  float r[4] = {vsum(s0 + t0), vsum(s1 + t1), vsum(s2 + t2), vsum(s3 + t3)};
  for (; p < k; p++) {
    float wv = wdtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)w)[p]) : ((const float *)w)[p];
    for (int q = 0; q < rows; q++) r[q] += x[q * ldx + p] * wv;
  }
  for (int q = 0; q < rows; q++) out[q] = r[q];
}

static int gemv_applies(const view_t *b, int64_t m) {
  return m <= 8 && b->row_stride == 1;
}

/* c[i][j] = x[i] · W[j] with W row j at bbase + j·col_stride (K contiguous). x dense f32 [m][k]. */
static void gemv(const float *x, int64_t m, const view_t *b, int64_t bbase, float *c, int64_t n, int64_t k, int accumulate) {
  size_t esize = b->dtype == DT_BF16 ? 2 : 4;
#pragma omp parallel for schedule(dynamic, 16) if (m * n * k >= PARALLEL_MIN_WORK)
  for (int64_t j = 0; j < n; j++) {
    const char *w = (const char *)b->data + (bbase + j * b->col_stride) * esize;
    float o[4];
    for (int64_t i = 0; i < m; i += 4) {
      int rows = m - i < 4 ? (int)(m - i) : 4;
      dot_rows(x + i * k, k, rows, w, b->dtype, k, o);
      for (int q = 0; q < rows; q++) c[(i + q) * n + j] = (accumulate ? c[(i + q) * n + j] : 0.0f) + o[q];
    }
  }
}

/*
 * With many rows (prefill, training) the bf16 weight is widened to f32 (k·n conversions against
 * m·n·k multiply-adds) and handed to the BLAS, which outruns our micro-kernel. A block of columns at
 * a time (WIDEN_FLOATS of f32, 1 MiB): the block stays in cache between its widening and the BLAS
 * reading it, and no weight-sized copy is allocated per call (which held RSS in malloc's heap).
 * Returns 0 (nothing written) without a BLAS or memory for the block.
 */
enum { BF16_WIDEN_MIN_ROWS = 32, WIDEN_FLOATS = 1 << 18 };
static int bf16_product_via_blas(const view_t *a, int64_t abase, const view_t *b, int64_t bbase, float *c, int64_t m, int64_t n, int64_t k,
                                 int accumulate) {
  if (!nt_blas_available()) return 0;
  /* Keep B's orientation: k-contiguous rows (x·Wᵀ) stay [n][k], anything else becomes [k][n]. */
  int kmajor = b->row_stride == 1;
  int64_t cols = WIDEN_FLOATS / k;
  if (cols < NR) cols = NR;
  if (cols > n) cols = n;
  float *w = malloc(sizeof(float) * (size_t)(cols * k));
  if (!w) return 0;
  const uint16_t *src = b->data;
  const float *ap = (const float *)a->data + abase;
  int done = 1;
  for (int64_t j0 = 0; j0 < n && done; j0 += cols) {
    int64_t nc = n - j0 < cols ? n - j0 : cols;
#pragma omp parallel for schedule(static) if (nc * k >= PARALLEL_MIN_WORK)
    for (int64_t j = 0; j < nc; j++) {
      const uint16_t *col = src + bbase + (j0 + j) * b->col_stride;
      if (kmajor)
        for (int64_t p = 0; p < k; p++) w[j * k + p] = bf16_to_f32(col[p]);
      else
        for (int64_t p = 0; p < k; p++) w[p * nc + j] = bf16_to_f32(col[p * b->row_stride]);
    }
    done = kmajor ? nt_blas_product_ldc(m, nc, k, ap, a->row_stride, a->col_stride, w, 1, k, c + j0, n, accumulate)
                  : nt_blas_product_ldc(m, nc, k, ap, a->row_stride, a->col_stride, w, nc, 1, c + j0, n, accumulate);
  }
  free(w);
  return done;
}

/*
 * params (f64, exact integers): batch, m, n, k,
 *   a: dtype, offset, batch_stride, row_stride, col_stride,
 *   b: dtype, offset, batch_stride, row_stride, col_stride,
 *   bias: present, dtype, offset, stride,
 *   c offset (dense [batch][m][n] f32),
 *   accumulate (1: c += product (+ bias), the backward's gradient sums; 0: c = product (+ bias)).
 */
EXPORT int nt_gemm(const double *params, const void *a_data, const void *b_data, const void *bias_data, float *c_data) {
  int64_t batch = (int64_t)params[0], m = (int64_t)params[1], n = (int64_t)params[2], k = (int64_t)params[3];
  view_t a = {a_data, (int)params[4], (int64_t)params[5], (int64_t)params[6], (int64_t)params[7], (int64_t)params[8]};
  view_t b = {b_data, (int)params[9], (int64_t)params[10], (int64_t)params[11], (int64_t)params[12], (int64_t)params[13]};
  int has_bias = (int)params[14];
  view_t bias = {bias_data, (int)params[15], (int64_t)params[16], 0, 0, (int64_t)params[17]};
  float *c = c_data + (int64_t)params[18];
  int accumulate = (int)params[19];

  int use_gemv = gemv_applies(&b, m);
  float *xbuf = NULL;
  if (use_gemv && !(a.dtype == DT_F32 && a.col_stride == 1)) {
    xbuf = malloc(sizeof(float) * (size_t)(m * k + 1));
    if (!xbuf) return -1;
  }
  int failed = 0;
  for (int64_t z = 0; z < batch && !failed; z++) {
    int64_t abase = a.offset + z * a.batch_stride, bbase = b.offset + z * b.batch_stride;
    float *cz = c + z * m * n;
    if (k == 0) {
      if (!accumulate) memset(cz, 0, sizeof(float) * (size_t)(m * n));
    } else if (!use_gemv && a.dtype == DT_F32 && b.dtype == DT_F32 &&
               nt_blas_product_ldc(m, n, k, (const float *)a.data + abase, a.row_stride, a.col_stride, (const float *)b.data + bbase, b.row_stride, b.col_stride, cz, n, accumulate)) {
      /* done by the system BLAS */
    } else if (a.dtype == DT_F32 && b.dtype == DT_BF16 && m >= BF16_WIDEN_MIN_ROWS && bf16_product_via_blas(&a, abase, &b, bbase, cz, m, n, k, accumulate)) {
      /* bf16 weights widened once per call, then the system BLAS */
    } else if (use_gemv) {
      const float *x;
      if (xbuf) {
        for (int64_t i = 0; i < m; i++)
          for (int64_t p = 0; p < k; p++) xbuf[i * k + p] = load_elem(&a, abase + i * a.row_stride + p * a.col_stride);
        x = xbuf;
      } else if (a.row_stride == k || m == 1) {
        x = (const float *)a.data + abase;
      } else {
        xbuf = malloc(sizeof(float) * (size_t)(m * k + 1));
        if (!xbuf) return -1;
        for (int64_t i = 0; i < m; i++) memcpy(xbuf + i * k, (const float *)a.data + abase + i * a.row_stride, sizeof(float) * (size_t)k);
        x = xbuf;
      }
      gemv(x, m, &b, bbase, cz, n, k, accumulate);
    } else {
      /*
       * Column chunks of whole NR slivers, several per thread and handed out dynamically, so a
       * thread the OS preempts (a shared machine) delays one chunk instead of half the product.
       */
      int threads = nt_threads();
      int64_t slivers = (n + NR - 1) / NR;
      int64_t chunks = m * n * k < PARALLEL_MIN_WORK ? 1 : threads * 4;
      if (chunks > slivers) chunks = slivers;
      int64_t chunk_slivers = (slivers + chunks - 1) / chunks;
      chunks = (slivers + chunk_slivers - 1) / chunk_slivers;
#pragma omp parallel num_threads(chunks < threads ? (int)chunks : threads)
      {
        float *apack = aligned_alloc(64, sizeof(float) * (size_t)(((MC + MR - 1) / MR) * MR * KC));
        float *bpack = aligned_alloc(64, sizeof(float) * (size_t)(chunk_slivers * NR * KC));
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < chunks; t++) {
          if (!apack || !bpack) {
#pragma omp atomic write
            failed = 1;
            continue;
          }
          int64_t j0 = t * chunk_slivers * NR, j1 = (t + 1) * chunk_slivers * NR;
          if (j1 > n) j1 = n;
          gemm_columns(&a, abase, &b, bbase, cz, m, n, k, j0, j1, apack, bpack, accumulate);
        }
        free(apack);
        free(bpack);
      }
    }
    if (has_bias && !failed) {
      for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) cz[i * n + j] += load_elem(&bias, bias.offset + j * bias.col_stride);
    }
  }
  free(xbuf);
  return failed ? -1 : 0;
}
