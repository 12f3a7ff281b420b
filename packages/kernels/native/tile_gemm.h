/*
 * Products of small cache-resident tiles (a chunk of a scan, a block of attention: tens of rows,
 * ≤ a few hundred columns), without gemm.c's packing: C[m×n] (+)= A[m×k] · B[k×n] with A read
 * through any strides and B's rows contiguous. 6 rows × 2 vectors of C stay in registers while k
 * runs (4 rows for the last columns narrower than 2 vectors).
 */
#ifndef NEMOTRON_TILE_GEMM_H
#define NEMOTRON_TILE_GEMM_H

#include "native.h"

enum { TILE_MR = 6 };

/* Rows i0..i0+5 (rows past m repeat the last one and are not stored), columns [j, j + 2·VLEN). */
static inline void tile_gemm_6x2(int64_t m, int64_t k, int64_t i0, int64_t j, const float *a, int64_t ars, int64_t acs, const float *b,
                                 int64_t ldb, float *c, int64_t ldc, int accumulate) {
  const float *ar[TILE_MR];
  for (int r = 0; r < TILE_MR; r++) ar[r] = a + (i0 + r < m ? i0 + r : m - 1) * ars;
  vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
  for (int64_t p = 0; p < k; p++) {
    const float *bp = b + p * ldb + j;
    vf b0 = vload(bp), b1 = vload(bp + VLEN);
    vf a0 = vbroadcast(ar[0][p * acs]), a1 = vbroadcast(ar[1][p * acs]);
    c00 += a0 * b0;
    c01 += a0 * b1;
    c10 += a1 * b0;
    c11 += a1 * b1;
    vf a2 = vbroadcast(ar[2][p * acs]), a3 = vbroadcast(ar[3][p * acs]);
    c20 += a2 * b0;
    c21 += a2 * b1;
    c30 += a3 * b0;
    c31 += a3 * b1;
    vf a4 = vbroadcast(ar[4][p * acs]), a5 = vbroadcast(ar[5][p * acs]);
    c40 += a4 * b0;
    c41 += a4 * b1;
    c50 += a5 * b0;
    c51 += a5 * b1;
  }
  vf rows[TILE_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
  for (int r = 0; r < TILE_MR && i0 + r < m; r++) {
    float *cr = c + (i0 + r) * ldc + j;
    if (accumulate) {
      vstore(cr, vload(cr) + rows[r][0]);
      vstore(cr + VLEN, vload(cr + VLEN) + rows[r][1]);
    } else {
      vstore(cr, rows[r][0]);
      vstore(cr + VLEN, rows[r][1]);
    }
  }
}

/* Rows i0..i0+3 of C (rows past m as above), columns [j, j+w) with w < 2·VLEN: one vector, then scalars. */
static inline void tile_gemm_narrow(int64_t m, int64_t k, int64_t i0, int64_t j, int64_t w, const float *a, int64_t ars, int64_t acs, const float *b,
                                    int64_t ldb, float *c, int64_t ldc, int accumulate) {
  const float *ar[4];
  for (int r = 0; r < 4; r++) ar[r] = a + (i0 + r < m ? i0 + r : m - 1) * ars;
  if (w >= VLEN) {
    vf c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
    for (int64_t p = 0; p < k; p++) {
      vf b0 = vload(b + p * ldb + j);
      c0 += vbroadcast(ar[0][p * acs]) * b0;
      c1 += vbroadcast(ar[1][p * acs]) * b0;
      c2 += vbroadcast(ar[2][p * acs]) * b0;
      c3 += vbroadcast(ar[3][p * acs]) * b0;
    }
    vf rows[4] = {c0, c1, c2, c3};
    for (int r = 0; r < 4 && i0 + r < m; r++) {
      float *cr = c + (i0 + r) * ldc + j;
      vstore(cr, accumulate ? vload(cr) + rows[r] : rows[r]);
    }
    j += VLEN;
    w -= VLEN;
  }
  for (int r = 0; r < 4 && i0 + r < m; r++)
    for (int64_t jj = j; jj < j + w; jj++) {
      float s = 0.0f;
      for (int64_t p = 0; p < k; p++) s += ar[r][p * acs] * b[p * ldb + jj];
      float *cr = c + (i0 + r) * ldc + jj;
      *cr = accumulate ? *cr + s : s;
    }
}

/* C (+)= A·B: A[i][p] = a[i·ars + p·acs], B[p][j] = b[p·ldb + j], C[i][j] = c[i·ldc + j]. */
static inline void tile_gemm(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b, int64_t ldb, float *c,
                             int64_t ldc, int accumulate) {
  if (m <= 0 || n <= 0) return;
  for (int64_t i0 = 0; i0 < m; i0 += TILE_MR) {
    int64_t j = 0;
    for (; j + 2 * VLEN <= n; j += 2 * VLEN) tile_gemm_6x2(m, k, i0, j, a, ars, acs, b, ldb, c, ldc, accumulate);
    if (j < n) {
      /* the block's rows, four at a time, bounded by the block's end */
      int64_t end = i0 + TILE_MR < m ? i0 + TILE_MR : m;
      for (int64_t r0 = i0; r0 < end; r0 += 4) tile_gemm_narrow(end, k, r0, j, n - j, a, ars, acs, b, ldb, c, ldc, accumulate);
    }
  }
}

#endif
