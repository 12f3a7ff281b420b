/*
 * Optional system BLAS for f32 products: the distro's OpenBLAS (`libopenblas0-pthread`), opened
 * at run time when present so the library builds and runs without it. Its sgemm matches or beats
 * our micro-kernel on GEMM shapes (prefill, training), so products with many rows use it; decode's
 * GEMV stays ours (see gemm.c).
 */
#include "native.h"

#include <dlfcn.h>

typedef void (*sgemm_fn)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*sgemv_fn)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*set_threads_fn)(int);

static sgemm_fn blas_sgemm;
static sgemv_fn blas_sgemv;
static set_threads_fn blas_set_threads;
static int blas_enabled = 1;

/* Turns the loaded BLAS off (0) or back on (1) without unloading it: tests compare both paths. */
EXPORT void nt_enable_blas(int on) { blas_enabled = on; }

/* Opens the BLAS at `path` (e.g. libopenblas.so.0); returns 1 when its cblas entry points were found. */
EXPORT int nt_load_blas(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!h) return 0;
  sgemm_fn gemm = (sgemm_fn)dlsym(h, "cblas_sgemm");
  sgemv_fn gemv = (sgemv_fn)dlsym(h, "cblas_sgemv");
  if (!gemm || !gemv) {
    dlclose(h);
    return 0;
  }
  blas_set_threads = (set_threads_fn)dlsym(h, "openblas_set_num_threads");
  if (blas_set_threads) blas_set_threads(nt_threads());
  blas_sgemm = gemm;
  blas_sgemv = gemv;
  return 1;
}

int nt_blas_available(void) { return blas_sgemm != NULL && blas_enabled; }

void nt_blas_threads(int n) {
  if (blas_set_threads) blas_set_threads(n);
}

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };

/* A [m×k] view as a cblas operand: unit stride along one dimension. Returns 0 when neither is. */
static int blas_operand(int64_t rs, int64_t cs, int64_t rows, int64_t cols, int *trans, int *ld) {
  if (cs == 1 && (rs >= cols || rows == 1)) {
    *trans = NO_TRANS;
    *ld = (int)(rows == 1 ? (cols > 0 ? cols : 1) : rs);
    return 1;
  }
  if (rs == 1 && (cs >= rows || cols == 1)) {
    *trans = TRANS;
    *ld = (int)(cols == 1 ? (rows > 0 ? rows : 1) : cs);
    return 1;
  }
  return 0;
}

/*
 * c (m×n, row-major, rows ldc floats apart: ldc > n is a column block of a wider product) = a · b
 * through the BLAS when both are f32 with a unit stride; with `accumulate`, c += a · b (the BLAS's
 * beta = 1: a backward's gradient sum without a temporary). Returns 0 (nothing written) when it
 * does not apply.
 */
int nt_blas_product_ldc(int64_t m, int64_t n, int64_t k, const float *a, int64_t ars, int64_t acs, const float *b, int64_t brs, int64_t bcs, float *c,
                        int64_t ldc, int accumulate) {
  if (!blas_sgemm || !blas_enabled || m > 0x7fffffff || n > 0x7fffffff || k > 0x7fffffff || ldc > 0x7fffffff) return 0;
  int ta, lda, tb, ldb;
  if (!blas_operand(ars, acs, m, k, &ta, &lda) || !blas_operand(brs, bcs, k, n, &tb, &ldb)) return 0;
  float beta = accumulate ? 1.0f : 0.0f;
  if (m == 1 && tb == TRANS && ldc == n) {
    /* y = W x with W [n×k] row-major: the GEMV of decode. */
    blas_sgemv(ROW_MAJOR, NO_TRANS, (int)n, (int)k, 1.0f, b, ldb, a, (int)(ta == NO_TRANS ? 1 : lda), beta, c, 1);
    return 1;
  }
  blas_sgemm(ROW_MAJOR, ta, tb, (int)m, (int)n, (int)k, 1.0f, a, lda, b, ldb, beta, c, (int)ldc);
  return 1;
}
