/* Vector math on the native kernels' vf lanes (GCC vector extensions): select, exp, sqrt, sigmoid, SiLU, dot, axpy. */
#ifndef NEMOTRON_VMATH_H
#define NEMOTRON_VMATH_H

#include "native.h"

#include <math.h>

/* Lane-wise m ? a : b for a comparison mask m (C has no vector ?:). */
static inline vf vselect(vi m, vf a, vf b) {
  vi ai, bi, r;
  memcpy(&ai, &a, sizeof ai);
  memcpy(&bi, &b, sizeof bi);
  r = (ai & m) | (bi & ~m);
  vf out;
  memcpy(&out, &r, sizeof out);
  return out;
}

/*
 * exp(x) for each lane, within ~2 ulp: 2^n · p(r) with x = n·ln2 + r, |r| ≤ ln2/2 (Cephes' polynomial).
 * Finite up to FLT_MAX (hi is the float just above ln FLT_MAX), denormal results down to lo, then 0.
 */
static inline vf vexp(vf x) {
  const vf hi = vbroadcast(88.72283935546875f), lo = vbroadcast(-103.972639f);
  vf xc = vselect(x < hi, x, hi);
  xc = vselect(xc > lo, xc, lo);
  vf n = xc * vbroadcast(1.44269504088896341f);
  /* round to nearest: add and subtract 1.5·2^23 */
  const vf magic = vbroadcast(12582912.0f);
  n = (n + magic) - magic;
  vf r = xc - n * vbroadcast(0.693359375f);
  r = r - n * vbroadcast(-2.12194440e-4f);
  vf p = vbroadcast(1.9875691500e-4f);
  p = p * r + vbroadcast(1.3981999507e-3f);
  p = p * r + vbroadcast(8.3334519073e-3f);
  p = p * r + vbroadcast(4.1665795894e-2f);
  p = p * r + vbroadcast(1.6666665459e-1f);
  p = p * r + vbroadcast(5.0000001201e-1f);
  p = p * r * r + r + vbroadcast(1.0f);
  /* 2^n in two factors so n down to -150 (denormal results) stays exact */
  vi ni = __builtin_convertvector(n, vi);
  vi half = ni >> 1;
  vi e1 = (half + 127) << 23, e2 = (ni - half + 127) << 23;
  vf s1, s2;
  memcpy(&s1, &e1, sizeof s1);
  memcpy(&s2, &e2, sizeof s2);
  vf out = p * s1 * s2;
  /* x above the clamp is +inf, below it 0, NaN stays NaN (the clamps above turned it into a number) */
  vf inf = vbroadcast(INFINITY), zero = {0};
  out = vselect(x > hi, inf, out);
  out = vselect(x < lo, zero, out);
  return vselect(x != x, x, out);
}

/* √x for each lane (the ISA's vector square root; lanes one by one elsewhere). */
static inline vf vsqrt(vf x) {
#if defined(__AVX512F__)
  return (vf)_mm512_sqrt_ps((__m512)x);
#elif defined(__AVX__)
  return (vf)_mm256_sqrt_ps((__m256)x);
#else
  for (int i = 0; i < VLEN; i++) x[i] = sqrtf(x[i]);
  return x;
#endif
}

/* 1 / (1 + exp(−x)) for each lane. */
static inline vf vsigmoid(vf x) { return vbroadcast(1.0f) / (vbroadcast(1.0f) + vexp(-x)); }

/* x·sigmoid(x) = x / (1 + exp(−x)) for each lane (−0 for x far below zero, as the scalar form). */
static inline vf vsilu(vf x) { return x / (vbroadcast(1.0f) + vexp(-x)); }

/* Σ a[i]·b[i] over n floats (vector accumulators; the tail in scalars). */
static inline float vdot(const float *restrict a, const float *restrict b, int64_t n) {
  vf acc0 = {0}, acc1 = {0};
  int64_t i = 0;
  for (; i + 2 * VLEN <= n; i += 2 * VLEN) {
    acc0 += vload(a + i) * vload(b + i);
    acc1 += vload(a + i + VLEN) * vload(b + i + VLEN);
  }
  for (; i + VLEN <= n; i += VLEN) acc0 += vload(a + i) * vload(b + i);
  float s = vsum(acc0 + acc1);
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

/* y[i] += alpha·x[i] over n floats. */
static inline void vaxpy(float *restrict y, float alpha, const float *restrict x, int64_t n) {
  vf va = vbroadcast(alpha);
  int64_t i = 0;
  for (; i + VLEN <= n; i += VLEN) vstore(y + i, vload(y + i) + va * vload(x + i));
  for (; i < n; i++) y[i] += alpha * x[i];
}

#endif
