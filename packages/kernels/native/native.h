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
#if defined(__AVX2__) && !defined(__AVX512F__)
  /* One zero-extending load and a shift (GCC's generic widening below becomes five instructions on AVX2). */
  return (vf)_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
#endif
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

static inline float bf16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16;
  float f;
  memcpy(&f, &w, sizeof f);
  return f;
}

int nt_threads(void);

/* Sigmoid top-k MoE routing (moe.c); decode.c routes its one token with it. */
enum { MAX_EXPERTS = 1024 };
typedef struct {
  int experts, k, n_group, topk_group, norm;
  double scale;
} moe_route_config;
int nt_moe_route_token(const moe_route_config *c, const void *logits, int ldt, int64_t loff, const void *bias, int bdt, int64_t boff, float *weights,
                       int32_t *indices);
void nt_blas_threads(int n);
int nt_blas_available(void);
int nt_blas_product_ldc(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs, float *c,
                        int64_t ldc, int accumulate);
#ifdef _OPENMP
static inline int omp_thread_id(void) { return omp_get_thread_num(); }
#else
static inline int omp_thread_id(void) { return 0; }
#endif

#endif
