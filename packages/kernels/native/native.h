/* Shared helpers of the native CPU kernels: vector types for the build host's widest SIMD, bf16, threads. */
#ifndef NEMOTRON_NATIVE_H
#define NEMOTRON_NATIVE_H

#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX__)
#include <immintrin.h>
#endif

#define EXPORT __attribute__((visibility("default")))

enum { DT_F32 = 0, DT_BF16 = 1, DT_I32 = 2 };

/*
 * Below this many multiply-adds (or equivalent) a kernel runs on the calling thread: waking a
 * second thread costs microseconds on a quiet machine and a scheduler quantum on a busy one.
 */
#define PARALLEL_MIN_WORK ((int64_t)1 << 18)

#if defined(__AVX512F__)
#define VLEN 16
#else
#define VLEN 8
#endif

typedef float vf __attribute__((vector_size(VLEN * 4)));
typedef float vf_unaligned __attribute__((vector_size(VLEN * 4), aligned(4)));
typedef uint32_t vu __attribute__((vector_size(VLEN * 4)));
typedef int32_t vi __attribute__((vector_size(VLEN * 4)));
typedef uint16_t vh_unaligned __attribute__((vector_size(VLEN * 2), aligned(2)));
typedef uint16_t vh __attribute__((vector_size(VLEN * 2)));

static inline vf vload(const float *p) { return *(const vf_unaligned *)p; }
static inline void vstore(float *p, vf v) { *(vf_unaligned *)p = v; }
/* One broadcast instruction ((vf){0} + x would keep an add: it differs from x for x = -0). */
static inline vf vbroadcast(float x) {
#if defined(__AVX512F__)
  return (vf)_mm512_set1_ps(x);
#elif defined(__AVX__)
  return (vf)_mm256_set1_ps(x);
#else
  vf v;
  for (int i = 0; i < VLEN; i++) v[i] = x;
  return v;
#endif
}
static inline vf vload_bf16(const uint16_t *p) {
  vh h = *(const vh_unaligned *)p;
  vu w = __builtin_convertvector(h, vu) << 16;
  vf out;
  memcpy(&out, &w, sizeof out);
  return out;
}
static inline float vsum(vf v) {
  float s = 0.0f;
  for (int i = 0; i < VLEN; i++) s += v[i];
  return s;
}

/*
 * e^x for a vector, ~1 ulp over the f32 range (Cephes' expf: x = n·ln2 + r, |r| ≤ ln2/2, a degree-6
 * polynomial for e^r, 2^n built in the exponent bits); e^x for x < -87.3 flushes to 0, above 88.7 is
 * +inf, NaN stays NaN. Scalar expf in a loop cost more than the rest of the conv and SiLU kernels.
 */
/* mask ? a : b per lane (mask lanes all-ones or zero, as vector comparisons give); C has no vector ?:. */
static inline vf vselect(vi mask, vf a, vf b) {
  vi ai, bi;
  memcpy(&ai, &a, sizeof ai);
  memcpy(&bi, &b, sizeof bi);
  vi r = (ai & mask) | (bi & ~mask);
  vf out;
  memcpy(&out, &r, sizeof out);
  return out;
}

static inline vf vexp(vf x) {
  const vf hi = vbroadcast(88.7228f), lo = vbroadcast(-87.3365f);
  vi over = x > hi, under = x < lo;
  vf xc = vselect(under, lo, vselect(over, hi, x));
  vf fx = xc * vbroadcast(1.44269504088896341f) + vbroadcast(0.5f);
  vi n = __builtin_convertvector(fx, vi);
  vf fn = __builtin_convertvector(n, vf);
  n += fn > fx; /* floor: a true comparison is -1 */
  fn = __builtin_convertvector(n, vf);
  vf r = xc - fn * vbroadcast(0.693359375f) + fn * vbroadcast(2.12194440e-4f);
  vf r2 = r * r;
  vf p = vbroadcast(1.9875691500e-4f);
  p = p * r + vbroadcast(1.3981999507e-3f);
  p = p * r + vbroadcast(8.3334519073e-3f);
  p = p * r + vbroadcast(4.1665795894e-2f);
  p = p * r + vbroadcast(1.6666665459e-1f);
  p = p * r + vbroadcast(5.0000001201e-1f);
  p = p * r2 + r + vbroadcast(1.0f);
  /* 2^n as 2^(n>>1) · 2^(n - (n>>1)): both halves are normal floats for every n in [-126, 128]. */
  vi half = n >> 1;
  vi b1 = (half + 127) << 23, b2 = (n - half + 127) << 23;
  vf s1, s2;
  memcpy(&s1, &b1, sizeof s1);
  memcpy(&s2, &b2, sizeof s2);
  vf out = p * s1 * s2;
  vf inf = vbroadcast(__builtin_inff()), zero = vbroadcast(0.0f);
  out = vselect(over, inf, vselect(under, zero, out));
  return vselect(x != x, x, out);
}

/* x·sigmoid(x) = x / (1 + e^-x) over a vector. */
static inline vf vsilu(vf x) { return x / (vbroadcast(1.0f) + vexp(-x)); }

static inline float bf16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16;
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

int nt_threads(void);
void nt_blas_threads(int n);
int nt_blas_available(void);
int nt_blas_product(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs, float *c);
int nt_blas_product_ldc(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs, float *c,
                        int64_t ldc);
#ifdef _OPENMP
static inline int omp_thread_id(void) { return omp_get_thread_num(); }
#else
static inline int omp_thread_id(void) { return 0; }
#endif

#endif
