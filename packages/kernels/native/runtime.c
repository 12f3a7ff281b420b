/* Library-wide state of the native CPU kernels: thread count and the ISA this build targets. */
#include "native.h"

/*
 * The count is per calling thread: Bun Workers sharing this library in one process each call
 * nt_set_threads on their own thread (their share of the cores), as OpenMP's omp_set_num_threads
 * is per thread too. A thread that never set it (an OpenMP team member) gets the last count set.
 * OpenBLAS's count is process-wide: the last call sets it.
 */
static int last_threads = 1;
static _Thread_local int threads = 0;

int nt_threads(void) { return threads > 0 ? threads : last_threads; }

/* Sets the calling thread's worker threads (≥ 1) and returns the count in effect. */
EXPORT int nt_set_threads(int n) {
  threads = n < 1 ? 1 : n;
  last_threads = threads;
#ifdef _OPENMP
  omp_set_num_threads(threads);
#endif
  nt_blas_threads(threads);
  return threads;
}

/*
 * What the code was compiled for, as bits: 1 avx2, 2 fma, 4 avx512f, 8 avx512bf16, 16 neon.
 * The loader compares it with nt_cpu_features() and refuses a build the CPU cannot run.
 */
EXPORT int nt_compiled_features(void) {
  int f = 0;
#ifdef __AVX2__
  f |= 1;
#endif
#ifdef __FMA__
  f |= 2;
#endif
#ifdef __AVX512F__
  f |= 4;
#endif
#ifdef __AVX512BF16__
  f |= 8;
#endif
#ifdef __ARM_NEON
  f |= 16;
#endif
  return f;
}

/* The same bits for the CPU running now. */
EXPORT int nt_cpu_features(void) {
  int f = 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) f |= 1;
  if (__builtin_cpu_supports("fma")) f |= 2;
  if (__builtin_cpu_supports("avx512f")) f |= 4;
#if __GNUC__ >= 12
  if (__builtin_cpu_supports("avx512bf16")) f |= 8;
#endif
#endif
#ifdef __ARM_NEON
  f |= 16;
#endif
  return f;
}
