/*
 * One whole decode step of a hybrid Mamba2 / attention / MLP model for one sequence (batch 1), in
 * one call and one thread team: embedding row → every block (pre-norm, mixer, residual) → norm_f →
 * lm_head logits. Decode is bound by the bytes of the weights (each read once per token), and as
 * separate ops bench-small's step was ~100 native calls (36 of them GEMVs), each with its TS glue,
 * temporaries and a wake-up of the second thread: here the team is woken once per step and passes
 * 2–3 barriers per layer that spin briefly before sleeping on a futex (a shared machine may preempt
 * the other thread).
 *
 * Work inside a phase is handed out in chunks through an atomic counter, so a preempted thread
 * delays one chunk, not half the phase. Every thread normalises the residual for itself (a few
 * hundred floats) rather than waiting at one more barrier.
 *
 * The table (f64, exact integers and pointers) is described next to nt_decode_step; the TS side
 * (ops/decode/native-decode.ts) builds it. The composition of the separate ops is the reference it
 * is tested against.
 */
#include "native.h"
#include "ssm_update.h"

#include <linux/futex.h>
#include <math.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { KIND_MAMBA = 0, KIND_ATTENTION = 1, KIND_MLP = 2, KIND_MOE = 3 };
enum { HEADER_SLOTS = 32, LAYER_SLOTS = 48, GEMV_CHUNK = 16, MAX_SEGMENTS = 64 };
enum { EPI_STORE = 0, EPI_ADD = 1, EPI_RELU2 = 2 };

static inline const void *ptr_at(const double *t, int i) { return (const void *)(uintptr_t)t[i]; }

static inline float rd(const void *p, int dt, int64_t i) {
  return dt == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

static inline float siluf(float v) { return v / (1.0f + expf(-v)); }
static inline float softplusf(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* ---- team synchronisation ---------------------------------------------------------------- */

typedef struct {
  _Atomic int arrived;
  _Atomic int sense;
  _Atomic int sleepers;
} barrier_t;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

/*
 * How long a thread spins at a barrier before sleeping on the futex adapts per thread: sleeping
 * frees the core for the thread being waited for when the machine is oversubscribed (measured on a
 * shared 2-core machine at load ~15: a 5 µs spin ran the step ~1.3× faster than 50 µs and 2× faster
 * than 200 µs), while on a quiet machine the other thread is a chunk away and a wake-up costs more
 * than the wait. So the limit halves after each wait that ended asleep and grows after each that
 * did not, between 2 and 50 µs.
 */
static _Thread_local double spin_limit_us = 20.0;

static void barrier_wait(barrier_t *b, int nthreads, int *local_sense) {
  if (nthreads == 1) return;
  int s = !*local_sense;
  *local_sense = s;
  if (atomic_fetch_add(&b->arrived, 1) == nthreads - 1) {
    atomic_store(&b->arrived, 0);
    atomic_store(&b->sense, s);
    if (atomic_load(&b->sleepers) > 0) syscall(SYS_futex, (int *)&b->sense, FUTEX_WAKE_PRIVATE, nthreads, NULL, NULL, 0);
    return;
  }
  double start = 0.0;
  for (int spins = 0; atomic_load_explicit(&b->sense, memory_order_acquire) != s; spins++) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
    if ((spins & 63) != 63) continue;
    if (start == 0.0) start = now_us();
    else if (now_us() - start > spin_limit_us) {
      atomic_fetch_add(&b->sleepers, 1);
      while (atomic_load(&b->sense) != s) syscall(SYS_futex, (int *)&b->sense, FUTEX_WAIT_PRIVATE, !s, NULL, NULL, 0);
      atomic_fetch_sub(&b->sleepers, 1);
      spin_limit_us = spin_limit_us * 0.5 < 2.0 ? 2.0 : spin_limit_us * 0.5;
      return;
    }
  }
  spin_limit_us = spin_limit_us * 1.25 > 50.0 ? 50.0 : spin_limit_us * 1.25;
}

/* A phase's counters: one per thread, each on its own 64-byte line (16 ints). */
enum { COUNTER_STRIDE = 16, LINE_BYTES = 64 };
_Static_assert(sizeof(_Atomic int) == sizeof(float), "the counters live in the f32 scratch");

/* Counted phases of a step: at most 3 per layer (a mixer's input GEMVs, its own work, its output), then lm_head's (and one spare). */
static inline int64_t step_phases(int64_t layers) { return 3 * layers + 2; }

/* Scratch floats for the counters, [phases][threads][COUNTER_STRIDE], and the room to align them to a line. */
static inline int64_t counter_floats(int64_t layers, int threads) {
  return step_phases(layers) * threads * COUNTER_STRIDE + LINE_BYTES / (int64_t)sizeof(float);
}

typedef struct {
  barrier_t barrier;
  _Atomic int *counters; /* [phases][threads][COUNTER_STRIDE], zero at the start */
  _Atomic int failed;    /* a MoE routing ran short */
} team_t;

typedef struct {
  team_t *team;
  int tid, nthreads, sense, phase;
} member_t;

/* Ends a phase: every thread waits for the others, then the next phase's counter is used. */
static void phase_end(member_t *m) {
  barrier_wait(&m->team->barrier, m->nthreads, &m->sense);
  m->phase++;
}

/*
 * The next of a phase's `items` work items, or -1 when none is left. Each thread owns a contiguous
 * share and takes it in order through its own counter, so a claim moves no cache line between cores
 * (one shared counter cost ~8 % of a bench-small decode step: a line transfer per 16 weight rows) and
 * its weight rows stream contiguously; a thread whose share is done takes the others' next items, so
 * a preempted thread still delays only one item.
 */
static inline int64_t claim(member_t *m, int64_t items) {
  _Atomic int *c = m->team->counters + (size_t)m->phase * (size_t)m->nthreads * COUNTER_STRIDE;
  for (int k = 0; k < m->nthreads; k++) {
    int u = (m->tid + k) % m->nthreads;
    int64_t start = items * u / m->nthreads, end = items * (u + 1) / m->nthreads;
    _Atomic int *cu = c + (size_t)u * COUNTER_STRIDE;
    if (start + atomic_load_explicit(cu, memory_order_relaxed) >= end) continue;
    int64_t i = start + atomic_fetch_add_explicit(cu, 1, memory_order_relaxed);
    if (i < end) return i;
  }
  return -1;
}

/* ---- GEMV --------------------------------------------------------------------------------- */

/* Dot products of x with 4 consecutive weight rows (row stride k). */
static inline void dot4(const float *restrict x, const void *w, int wdt, int64_t k, float out[4]) {
  vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
  int64_t p = 0;
  if (wdt == DT_BF16) {
    const uint16_t *w0 = w, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      vf x0 = vload(x + p), x1 = vload(x + p + VLEN);
      a0 += x0 * vload_bf16(w0 + p); b0 += x1 * vload_bf16(w0 + p + VLEN);
      a1 += x0 * vload_bf16(w1 + p); b1 += x1 * vload_bf16(w1 + p + VLEN);
      a2 += x0 * vload_bf16(w2 + p); b2 += x1 * vload_bf16(w2 + p + VLEN);
      a3 += x0 * vload_bf16(w3 + p); b3 += x1 * vload_bf16(w3 + p + VLEN);
    }
    out[0] = vsum(a0 + b0); out[1] = vsum(a1 + b1); out[2] = vsum(a2 + b2); out[3] = vsum(a3 + b3);
    for (; p < k; p++) {
      out[0] += x[p] * bf16_to_f32(w0[p]); out[1] += x[p] * bf16_to_f32(w1[p]);
      out[2] += x[p] * bf16_to_f32(w2[p]); out[3] += x[p] * bf16_to_f32(w3[p]);
    }
  } else {
    const float *w0 = w, *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      vf x0 = vload(x + p), x1 = vload(x + p + VLEN);
      a0 += x0 * vload(w0 + p); b0 += x1 * vload(w0 + p + VLEN);
      a1 += x0 * vload(w1 + p); b1 += x1 * vload(w1 + p + VLEN);
      a2 += x0 * vload(w2 + p); b2 += x1 * vload(w2 + p + VLEN);
      a3 += x0 * vload(w3 + p); b3 += x1 * vload(w3 + p + VLEN);
    }
    out[0] = vsum(a0 + b0); out[1] = vsum(a1 + b1); out[2] = vsum(a2 + b2); out[3] = vsum(a3 + b3);
    for (; p < k; p++) {
      out[0] += x[p] * w0[p]; out[1] += x[p] * w1[p];
      out[2] += x[p] * w2[p]; out[3] += x[p] * w3[p];
    }
  }
}

#if defined(__AVX2__) && defined(__FMA__)
/*
 * bf16 rows on AVX2: 16 weights are one 256-bit load whose 32-bit lanes hold the pairs (2i, 2i+1);
 * a shift widens the even ones and a mask the odd ones, against x reordered once per phase into
 * [evens | odds] per block of 16 (permute_x) — two ALU ops per 16 weights instead of a zero-extend,
 * shuffle and shift per 8 (what GCC makes of the generic widening).
 */
#define BF16_PAIRS 1
static void permute_x(const float *x, int64_t k, float *xp) {
  int64_t p = 0;
  for (; p + 16 <= k; p += 16)
    for (int i = 0; i < 8; i++) {
      xp[p + i] = x[p + 2 * i];
      xp[p + 8 + i] = x[p + 2 * i + 1];
    }
  for (; p < k; p++) xp[p] = x[p];
}

static inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

#define BF16_EVEN(r) _mm256_castsi256_ps(_mm256_slli_epi32((r), 16))
#define BF16_ODD(r) _mm256_castsi256_ps(_mm256_and_si256((r), hi_mask))

/* Dot products of the reordered x with 4 consecutive bf16 rows (row stride k). */
static inline void dot4_bf16(const float *restrict xp, const uint16_t *w0, int64_t k, float out[4]) {
  const __m256i hi_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  const uint16_t *w1 = w0 + k, *w2 = w1 + k, *w3 = w2 + k;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m256 xe = _mm256_loadu_ps(xp + p), xo = _mm256_loadu_ps(xp + p + 8);
    __m256i r0 = _mm256_loadu_si256((const __m256i *)(w0 + p)), r1 = _mm256_loadu_si256((const __m256i *)(w1 + p));
    __m256i r2 = _mm256_loadu_si256((const __m256i *)(w2 + p)), r3 = _mm256_loadu_si256((const __m256i *)(w3 + p));
    a0 = _mm256_fmadd_ps(BF16_EVEN(r0), xe, a0);
    b0 = _mm256_fmadd_ps(BF16_ODD(r0), xo, b0);
    a1 = _mm256_fmadd_ps(BF16_EVEN(r1), xe, a1);
    b1 = _mm256_fmadd_ps(BF16_ODD(r1), xo, b1);
    a2 = _mm256_fmadd_ps(BF16_EVEN(r2), xe, a2);
    b2 = _mm256_fmadd_ps(BF16_ODD(r2), xo, b2);
    a3 = _mm256_fmadd_ps(BF16_EVEN(r3), xe, a3);
    b3 = _mm256_fmadd_ps(BF16_ODD(r3), xo, b3);
  }
  out[0] = hsum256(_mm256_add_ps(a0, b0));
  out[1] = hsum256(_mm256_add_ps(a1, b1));
  out[2] = hsum256(_mm256_add_ps(a2, b2));
  out[3] = hsum256(_mm256_add_ps(a3, b3));
  for (; p < k; p++) {
    out[0] += xp[p] * bf16_to_f32(w0[p]); out[1] += xp[p] * bf16_to_f32(w1[p]);
    out[2] += xp[p] * bf16_to_f32(w2[p]); out[3] += xp[p] * bf16_to_f32(w3[p]);
  }
}

static inline float dot1_bf16(const float *restrict xp, const uint16_t *w, int64_t k) {
  const __m256i hi_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 a = _mm256_setzero_ps(), b = a;
  int64_t p = 0;
  for (; p + 16 <= k; p += 16) {
    __m256i r = _mm256_loadu_si256((const __m256i *)(w + p));
    a = _mm256_fmadd_ps(BF16_EVEN(r), _mm256_loadu_ps(xp + p), a);
    b = _mm256_fmadd_ps(BF16_ODD(r), _mm256_loadu_ps(xp + p + 8), b);
  }
  float r = hsum256(_mm256_add_ps(a, b));
  for (; p < k; p++) r += xp[p] * bf16_to_f32(w[p]);
  return r;
}

/* One bf16 row (x reordered by permute_x), four accumulators. */
static inline float row_bf16(const float *restrict xp, const uint16_t *w, int64_t k) {
  const __m256i hi_mask = _mm256_set1_epi32((int)0xFFFF0000u);
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int64_t p = 0;
  for (; p + 32 <= k; p += 32) {
    __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + p)), r1 = _mm256_loadu_si256((const __m256i *)(w + p + 16));
    a0 = _mm256_fmadd_ps(BF16_EVEN(r0), _mm256_loadu_ps(xp + p), a0);
    a1 = _mm256_fmadd_ps(BF16_ODD(r0), _mm256_loadu_ps(xp + p + 8), a1);
    a2 = _mm256_fmadd_ps(BF16_EVEN(r1), _mm256_loadu_ps(xp + p + 16), a2);
    a3 = _mm256_fmadd_ps(BF16_ODD(r1), _mm256_loadu_ps(xp + p + 24), a3);
  }
  for (; p + 16 <= k; p += 16) {
    __m256i r0 = _mm256_loadu_si256((const __m256i *)(w + p));
    a0 = _mm256_fmadd_ps(BF16_EVEN(r0), _mm256_loadu_ps(xp + p), a0);
    a1 = _mm256_fmadd_ps(BF16_ODD(r0), _mm256_loadu_ps(xp + p + 8), a1);
  }
  float r = hsum256(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; p < k; p++) r += xp[p] * bf16_to_f32(w[p]);
  return r;
}

/* e^x for 8 lanes (Cephes' expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp), x ≤ 88.3. */
static inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}
#else
#define BF16_PAIRS 0
#endif

/* w[j] = e^(w[j] − max) in place (0 where w[j] is −∞: a masked key); returns Σ w. */
static float softmax_weights(float *w, int64_t n, float max) {
  float sum = 0.0f;
  int64_t j = 0;
#if BF16_PAIRS
  __m256 vmax = _mm256_set1_ps(max), acc = _mm256_setzero_ps(), ninf = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) {
    __m256 v = _mm256_loadu_ps(w + j);
    __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(v, vmax)), _mm256_cmp_ps(v, ninf, _CMP_NEQ_OQ));
    _mm256_storeu_ps(w + j, e);
    acc = _mm256_add_ps(acc, e);
  }
  sum = hsum256(acc);
#endif
  for (; j < n; j++) {
    w[j] = w[j] == -INFINITY ? 0.0f : expf(w[j] - max);
    sum += w[j];
  }
  return sum;
}

/* One f32 row, four accumulators. */
static inline float row_f32(const float *restrict x, const float *restrict w, int64_t k) {
  vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
  int64_t p = 0;
  for (; p + 4 * VLEN <= k; p += 4 * VLEN) {
    a0 += vload(x + p) * vload(w + p);
    a1 += vload(x + p + VLEN) * vload(w + p + VLEN);
    a2 += vload(x + p + 2 * VLEN) * vload(w + p + 2 * VLEN);
    a3 += vload(x + p + 3 * VLEN) * vload(w + p + 3 * VLEN);
  }
  for (; p + VLEN <= k; p += VLEN) a0 += vload(x + p) * vload(w + p);
  float r = vsum((a0 + a1) + (a2 + a3));
  for (; p < k; p++) r += x[p] * w[p];
  return r;
}

static inline float dot1(const float *restrict x, const void *w, int wdt, int64_t k) {
  vf a = {0}, b = {0};
  int64_t p = 0;
  float r;
  if (wdt == DT_BF16) {
    const uint16_t *wh = w;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      a += vload(x + p) * vload_bf16(wh + p);
      b += vload(x + p + VLEN) * vload_bf16(wh + p + VLEN);
    }
    r = vsum(a + b);
    for (; p < k; p++) r += x[p] * bf16_to_f32(wh[p]);
  } else {
    const float *wf = w;
    for (; p + 2 * VLEN <= k; p += 2 * VLEN) {
      a += vload(x + p) * vload(wf + p);
      b += vload(x + p + VLEN) * vload(wf + p + VLEN);
    }
    r = vsum(a + b);
    for (; p < k; p++) r += x[p] * wf[p];
  }
  return r;
}

/* A weight [rows, k] (dense) whose product with x lands in out[0..rows) with an epilogue. */
typedef struct {
  const void *w;
  int wdt;
  const void *bias;
  int bdt;
  int64_t rows;
  float *out;
  int epilogue;
} segment_t;

static inline float epilogue(const segment_t *s, int64_t j, float v) {
  if (s->bias) v += rd(s->bias, s->bdt, j);
  switch (s->epilogue) {
    case EPI_ADD: return s->out[j] + v;
    case EPI_RELU2: {
      float r = v > 0.0f || v != v ? v : 0.0f;
      return r * r;
    }
    default: return v;
  }
}

/*
 * One row at a time: a chunk's rows are contiguous, so its weights are one sequential stream. For
 * rows shorter than a 4 KiB page this streams faster than four rows at once (four short streams
 * that restart every block): measured single-threaded on the Zen 3, 131072×512 went from 8 to 15–16
 * GB/s (bf16) and 11–15 to 20 GB/s (f32, STREAM ~20 then); from 4 KiB rows on, four rows at once
 * win (16384×4096 f32: 25 vs 18–19 GB/s).
 */
static void gemv_rows_single(const segment_t *s, const float *x, const float *xp, int64_t k, int64_t r0, int64_t r1) {
#if BF16_PAIRS
  if (s->wdt == DT_BF16) {
    const uint16_t *w = s->w;
    for (int64_t j = r0; j < r1; j++) s->out[j] = epilogue(s, j, row_bf16(xp, w + j * k, k));
    return;
  }
#else
  (void)xp;
#endif
  if (s->wdt == DT_F32) {
    const float *w = s->w;
    for (int64_t j = r0; j < r1; j++) s->out[j] = epilogue(s, j, row_f32(x, w + j * k, k));
    return;
  }
  for (int64_t j = r0; j < r1; j++) s->out[j] = epilogue(s, j, dot1(x, (const uint16_t *)s->w + j * k, DT_BF16, k));
}

/* xp: x reordered by permute_x, read by bf16 rows when BF16_PAIRS. */
static void gemv_rows(const segment_t *s, const float *x, const float *xp, int64_t k, int64_t r0, int64_t r1) {
  size_t esize = s->wdt == DT_BF16 ? 2 : 4;
  if ((size_t)k * esize < 4096) {
    gemv_rows_single(s, x, xp, k, r0, r1);
    return;
  }
  int64_t j = r0;
#if BF16_PAIRS
  if (s->wdt == DT_BF16) {
    const uint16_t *w = s->w;
    for (; j + 4 <= r1; j += 4) {
      float o[4];
      dot4_bf16(xp, w + j * k, k, o);
      for (int q = 0; q < 4; q++) s->out[j + q] = epilogue(s, j + q, o[q]);
    }
    for (; j < r1; j++) s->out[j] = epilogue(s, j, dot1_bf16(xp, w + j * k, k));
    return;
  }
#else
  (void)xp;
#endif
  for (; j + 4 <= r1; j += 4) {
    float o[4];
    dot4(x, (const char *)s->w + (size_t)(j * k) * esize, s->wdt, k, o);
    for (int q = 0; q < 4; q++) s->out[j + q] = epilogue(s, j + q, o[q]);
  }
  for (; j < r1; j++) s->out[j] = epilogue(s, j, dot1(x, (const char *)s->w + (size_t)(j * k) * esize, s->wdt, k));
}

/*
 * One phase: x · Wᵀ for every segment (all with inner size k), chunks of rows claimed by the
 * threads. `xp` is the thread's buffer for x reordered for bf16 rows.
 */
static void gemv_phase(member_t *m, const segment_t *segs, int nsegs, const float *x, int64_t k, float *xp) {
#if BF16_PAIRS
  for (int i = 0; i < nsegs; i++)
    if (segs[i].wdt == DT_BF16) {
      permute_x(x, k, xp);
      break;
    }
#endif
  int64_t first[MAX_SEGMENTS + 1];
  first[0] = 0;
  for (int i = 0; i < nsegs; i++) first[i + 1] = first[i] + (segs[i].rows + GEMV_CHUNK - 1) / GEMV_CHUNK;
  for (int64_t item = claim(m, first[nsegs]); item >= 0; item = claim(m, first[nsegs])) {
    int i = 0;
    while (item >= first[i + 1]) i++;
    int64_t r0 = (item - first[i]) * GEMV_CHUNK, r1 = r0 + GEMV_CHUNK;
    if (r1 > segs[i].rows) r1 = segs[i].rows;
    gemv_rows(&segs[i], x, xp, k, r0, r1);
  }
  phase_end(m);
}

/* ---- attention over the cache ---------------------------------------------------------------- */

#if BF16_PAIRS
/* Lane t of the result is the sum of a_t's lanes (eight horizontal sums for the price of ~one). */
static inline __m256 reduce8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6, __m256 a7) {
  __m256 u0 = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
  __m256 u1 = _mm256_hadd_ps(_mm256_hadd_ps(a4, a5), _mm256_hadd_ps(a6, a7));
  return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

/*
 * scores[r][j] = q_r · K_j for `rows` query rows (row stride d) against keys [0, n) (row stride d),
 * −∞ where the mask is 0; max[r] the row's largest. Eight keys at a time per query row: eight
 * accumulators reduced together, the eight key rows (2 KiB at d = 64) staying in L1 across the rows.
 */
static void attention_scores(const float *qs, int64_t rows, int64_t d, const float *K, int64_t n, const float *mask, float *scores, float *max) {
  int64_t j = 0;
#if BF16_PAIRS
  if (d % 8 == 0)
    for (; j + 8 <= n; j += 8) {
      const float *k0 = K + j * d;
      for (int64_t r = 0; r < rows; r++) {
        const float *q = qs + r * d;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
        for (int64_t i = 0; i < d; i += 8) {
          __m256 qv = _mm256_loadu_ps(q + i);
          a0 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + i), a0);
          a1 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + d + i), a1);
          a2 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 2 * d + i), a2);
          a3 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 3 * d + i), a3);
          a4 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 4 * d + i), a4);
          a5 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 5 * d + i), a5);
          a6 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 6 * d + i), a6);
          a7 = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k0 + 7 * d + i), a7);
        }
        _mm256_storeu_ps(scores + r * n + j, reduce8(a0, a1, a2, a3, a4, a5, a6, a7));
      }
    }
#endif
  for (; j < n; j++)
    for (int64_t r = 0; r < rows; r++) scores[r * n + j] = dot1(qs + r * d, K + j * d, DT_F32, d);
  for (int64_t r = 0; r < rows; r++) {
    float *sr = scores + r * n, m = -INFINITY;
    for (int64_t k = 0; k < n; k++) {
      if (mask && mask[k] == 0.0f) sr[k] = -INFINITY;
      if (sr[k] > m) m = sr[k];
    }
    max[r] = m;
  }
}

/*
 * o_r = Σ_j w[r][j] · V_j over unmasked keys, for the rows with a finite max. Keys go in blocks
 * whose value rows stay in L1 while every query row passes over them; a row's output slice is kept
 * in registers (eight vectors) across a block instead of being loaded and stored per key.
 */
enum { VALUE_BLOCK = 64 };
static void attention_values(const float *w, int64_t rows, const float *max, int64_t d, const float *V, int64_t n, const float *mask, float *out) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < d; i++) out[r * d + i] = 0.0f;
  for (int64_t j0 = 0; j0 < n; j0 += VALUE_BLOCK) {
    int64_t j1 = j0 + VALUE_BLOCK < n ? j0 + VALUE_BLOCK : n;
    for (int64_t r = 0; r < rows; r++) {
      if (max[r] == -INFINITY) continue;
      const float *wr = w + r * n;
      float *o = out + r * d;
      int64_t c = 0;
      for (; c + 8 * VLEN <= d; c += 8 * VLEN) {
        vf a0 = vload(o + c), a1 = vload(o + c + VLEN), a2 = vload(o + c + 2 * VLEN), a3 = vload(o + c + 3 * VLEN);
        vf a4 = vload(o + c + 4 * VLEN), a5 = vload(o + c + 5 * VLEN), a6 = vload(o + c + 6 * VLEN), a7 = vload(o + c + 7 * VLEN);
        for (int64_t j = j0; j < j1; j++) {
          if (mask && mask[j] == 0.0f) continue;
          const float *v = V + j * d + c;
          vf vw = vbroadcast(wr[j]);
          a0 += vw * vload(v); a1 += vw * vload(v + VLEN); a2 += vw * vload(v + 2 * VLEN); a3 += vw * vload(v + 3 * VLEN);
          a4 += vw * vload(v + 4 * VLEN); a5 += vw * vload(v + 5 * VLEN); a6 += vw * vload(v + 6 * VLEN); a7 += vw * vload(v + 7 * VLEN);
        }
        vstore(o + c, a0); vstore(o + c + VLEN, a1); vstore(o + c + 2 * VLEN, a2); vstore(o + c + 3 * VLEN, a3);
        vstore(o + c + 4 * VLEN, a4); vstore(o + c + 5 * VLEN, a5); vstore(o + c + 6 * VLEN, a6); vstore(o + c + 7 * VLEN, a7);
      }
      for (; c + VLEN <= d; c += VLEN) {
        vf a = vload(o + c);
        for (int64_t j = j0; j < j1; j++)
          if (!mask || mask[j] != 0.0f) a += vbroadcast(wr[j]) * vload(V + j * d + c);
        vstore(o + c, a);
      }
      for (; c < d; c++) {
        float a = o[c];
        for (int64_t j = j0; j < j1; j++)
          if (!mask || mask[j] != 0.0f) a += wr[j] * V[j * d + c];
        o[c] = a;
      }
    }
  }
}

/* xn = w ⊙ h / rms(h), on the calling thread into its own buffer. */
static void rms_norm(const float *h, const void *w, int wdt, float eps, int64_t n, float *xn) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; i++) ss += h[i] * h[i];
  float r = 1.0f / sqrtf(ss / (float)n + eps);
  for (int64_t i = 0; i < n; i++) xn[i] = h[i] * r * rd(w, wdt, i);
}

/* ---- layers -------------------------------------------------------------------------------- */

#define XP (s->xp + m->tid * s->max_inner)

typedef struct {
  float *h;       /* [H] residual stream */
  float *xn;      /* [threads][H] each thread's normed input */
  float *a;       /* [max projection rows] */
  float *b;       /* [max of conv_dim, attention q width] */
  float *y;       /* [max of d_inner, attention width] */
  float *scores;  /* [threads][max of query heads per KV head × kv length] */
  float *xp;      /* [threads][max inner size] x reordered for bf16 rows */
  int64_t hidden, max_scores, max_inner;
} scratch_t;

/* Mamba2 mixer: in_proj, conv update + SiLU, dt, state update, gated group norm, out_proj + residual. */
static void mamba_layer(member_t *m, const double *L, const scratch_t *s, float *xn) {
  int64_t H = s->hidden;
  int64_t heads = (int64_t)L[23], P = (int64_t)L[24], G = (int64_t)L[25], N = (int64_t)L[26], K = (int64_t)L[27];
  int64_t dInner = heads * P, convDim = dInner + 2 * G * N, inRows = dInner + convDim + heads, hpg = heads / G;
  segment_t in = {ptr_at(L, 4), (int)L[5], ptr_at(L, 31), (int)L[32], inRows, s->a, EPI_STORE};
  gemv_phase(m, &in, 1, xn, H, XP);

  const float *zx = s->a;
  const void *convW = ptr_at(L, 8), *convB = ptr_at(L, 10), *dtBias = ptr_at(L, 12), *aLog = ptr_at(L, 14), *D = ptr_at(L, 16), *gw = ptr_at(L, 18);
  int convWdt = (int)L[9], convBdt = (int)L[11], dtBiasDt = (int)L[13], aLogDt = (int)L[15], Ddt = (int)L[17], gwdt = (int)L[19];
  float geps = (float)L[20];
  float *convState = (float *)ptr_at(L, 21), *ssm = (float *)ptr_at(L, 22);
  int hasLimit = (int)L[28];
  float lo = (float)L[29], hi = (float)L[30];
  float *xbc = s->b, *y = s->y;
  for (int64_t g = claim(m, G); g >= 0; g = claim(m, G)) {
    /* The group's conv channels: its heads' x, its B and its C. */
    int64_t ranges[3][2] = {{g * hpg * P, (g + 1) * hpg * P}, {dInner + g * N, dInner + (g + 1) * N}, {dInner + G * N + g * N, dInner + G * N + (g + 1) * N}};
    for (int r = 0; r < 3; r++) {
      for (int64_t c = ranges[r][0]; c < ranges[r][1]; c++) {
        float *row = convState + c * K;
        for (int64_t t = 0; t < K - 1; t++) row[t] = row[t + 1];
        row[K - 1] = zx[dInner + c];
        float acc = convB ? rd(convB, convBdt, c) : 0.0f;
        for (int64_t t = 0; t < K; t++) acc += rd(convW, convWdt, c * K + t) * row[t];
        xbc[c] = siluf(acc);
      }
    }
    const float *Bv = xbc + dInner + g * N, *Cv = xbc + dInner + G * N + g * N;
    for (int64_t hh = g * hpg; hh < (g + 1) * hpg; hh++) {
      float step = softplusf(zx[dInner + convDim + hh] + rd(dtBias, dtBiasDt, hh));
      if (hasLimit) step = fminf(fmaxf(step, lo), hi);
      float decay = expf(step * -expf(rd(aLog, aLogDt, hh))), dh = D ? rd(D, Ddt, hh) : 0.0f;
      const float *xv = xbc + hh * P;
      float *S = ssm + hh * P * N, *yv = y + hh * P;
      for (int64_t p = 0; p < P; p++) yv[p] = ssm_update_row(S + p * N, Bv, Cv, decay, step * xv[p], N) + dh * xv[p];
    }
    /* Gate and group norm over the group's d_inner channels (the same range as its heads). */
    int64_t c0 = g * hpg * P, n = hpg * P;
    float ss = 0.0f;
    for (int64_t c = c0; c < c0 + n; c++) {
      float v = y[c] * siluf(zx[c]);
      y[c] = v;
      ss += v * v;
    }
    float rstd = 1.0f / sqrtf(ss / (float)n + geps);
    for (int64_t c = c0; c < c0 + n; c++) y[c] = rd(gw, gwdt, c) * y[c] * rstd;
  }
  phase_end(m);

  segment_t out = {ptr_at(L, 6), (int)L[7], ptr_at(L, 33), (int)L[34], H, s->h, EPI_ADD};
  gemv_phase(m, &out, 1, y, dInner, XP);
}

/* Attention: q | k | v (k, v straight into the cache slot), attention over the cache per q head, o_proj + residual. */
static void attention_layer(member_t *m, const double *L, const scratch_t *s, float *xn) {
  int64_t H = s->hidden;
  int64_t nq = (int64_t)L[14], nkv = (int64_t)L[15], d = (int64_t)L[16], cap = (int64_t)L[17], keys = (int64_t)L[18];
  float scale = (float)L[19];
  const float *mask = ptr_at(L, 20);
  float *kc = (float *)ptr_at(L, 12), *vc = (float *)ptr_at(L, 13);
  int64_t slot = keys - 1;
  segment_t segs[MAX_SEGMENTS];
  int n = 0;
  segs[n++] = (segment_t){ptr_at(L, 4), (int)L[5], ptr_at(L, 21), (int)L[22], nq * d, s->b, EPI_STORE};
  size_t kesize = (int)L[7] == DT_BF16 ? 2 : 4, vesize = (int)L[9] == DT_BF16 ? 2 : 4;
  size_t kbesize = (int)L[24] == DT_BF16 ? 2 : 4, vbesize = (int)L[26] == DT_BF16 ? 2 : 4;
  for (int64_t g = 0; g < nkv; g++) {
    const void *kb = ptr_at(L, 23), *vb = ptr_at(L, 25);
    segs[n++] = (segment_t){(const char *)ptr_at(L, 6) + (size_t)(g * d * H) * kesize, (int)L[7], kb ? (const char *)kb + (size_t)(g * d) * kbesize : NULL,
                            (int)L[24], d, kc + (g * cap + slot) * d, EPI_STORE};
    segs[n++] = (segment_t){(const char *)ptr_at(L, 8) + (size_t)(g * d * H) * vesize, (int)L[9], vb ? (const char *)vb + (size_t)(g * d) * vbesize : NULL,
                            (int)L[26], d, vc + (g * cap + slot) * d, EPI_STORE};
  }
  gemv_phase(m, segs, n, xn, H, XP);

  /*
   * A work item is a KV head with some of its query heads (all of them unless threads outnumber KV
   * heads): each key and value row is read once for the item's heads.
   */
  int64_t group = nq / nkv, splits = m->nthreads > nkv ? (m->nthreads + nkv - 1) / nkv : 1;
  if (splits > group) splits = group;
  int64_t per = (group + splits - 1) / splits;
  float *scores = s->scores + m->tid * s->max_scores;
  for (int64_t item = claim(m, nkv * splits); item >= 0; item = claim(m, nkv * splits)) {
    int64_t g = item / splits, r0 = (item % splits) * per, r1 = r0 + per < group ? r0 + per : group;
    if (r0 >= r1) continue;
    int64_t rows = r1 - r0;
    const float *K = kc + g * cap * d, *V = vc + g * cap * d;
    float qs[rows * d], max[rows];
    for (int64_t r = 0; r < rows; r++) {
      const float *q = s->b + (g * group + r0 + r) * d;
      for (int64_t i = 0; i < d; i++) qs[r * d + i] = q[i] * scale;
    }
    /* The item's heads are consecutive, so their outputs are one [rows, d] block of y. */
    float *o = s->y + (g * group + r0) * d;
    attention_scores(qs, rows, d, K, keys, mask, scores, max);
    float inv[rows];
    for (int64_t r = 0; r < rows; r++) {
      float sum = max[r] > -INFINITY ? softmax_weights(scores + r * keys, keys, max[r]) : 0.0f;
      inv[r] = sum > 0.0f ? 1.0f / sum : 0.0f;
    }
    attention_values(scores, rows, max, d, V, keys, mask, o);
    for (int64_t r = 0; r < rows; r++)
      for (int64_t i = 0; i < d; i++) o[r * d + i] = inv[r] > 0.0f ? o[r * d + i] * inv[r] : 0.0f;
  }
  phase_end(m);

  segment_t out = {ptr_at(L, 10), (int)L[11], ptr_at(L, 27), (int)L[28], H, s->h, EPI_ADD};
  gemv_phase(m, &out, 1, s->y, nq * d, XP);
}

/* MLP: relu²(up) then down + residual. */
static void mlp_layer(member_t *m, const double *L, const scratch_t *s, float *xn) {
  int64_t H = s->hidden, inter = (int64_t)L[8];
  segment_t up = {ptr_at(L, 4), (int)L[5], ptr_at(L, 9), (int)L[10], inter, s->a, EPI_RELU2};
  gemv_phase(m, &up, 1, xn, H, XP);
  segment_t down = {ptr_at(L, 6), (int)L[7], ptr_at(L, 11), (int)L[12], H, s->h, EPI_ADD};
  gemv_phase(m, &down, 1, s->a, inter, XP);
}

/* One row's dot product with x (xp: x reordered by permute_x, for bf16 rows). */
static inline float row_dot(const float *x, const float *xp, const void *w, int wdt, int64_t k) {
#if BF16_PAIRS
  if (wdt == DT_BF16) return row_bf16(xp, w, k);
#else
  (void)xp;
#endif
  if (wdt == DT_F32) return row_f32(x, w, k);
  return dot1(x, w, wdt, k);
}

/*
 * MoE (moe.ts): router logits and the shared expert's up (one phase); every thread routes the token
 * itself from the logits (nt_moe_route_token, the per-op path's routing: a few hundred flops, no
 * barrier); the chosen experts' ups with relu² (one phase); then per hidden row the weighted sum of
 * the experts' down rows in slot order, plus the shared expert's down row, plus the residual — one
 * phase that reads only the chosen experts' weights.
 */
static void moe_layer(member_t *m, const double *L, const scratch_t *s, float *xn) {
  int64_t H = s->hidden, E = (int64_t)L[8], k = (int64_t)L[9], I = (int64_t)L[18], Is = (int64_t)L[23];
  float *logits = s->a, *act = s->a + E, *shared = act + k * I;
  segment_t first[2] = {{ptr_at(L, 4), (int)L[5], NULL, DT_F32, E, logits, EPI_STORE}, {ptr_at(L, 19), (int)L[20], ptr_at(L, 24), (int)L[25], Is, shared, EPI_RELU2}};
  gemv_phase(m, first, 2, xn, H, XP);

  moe_route_config rc = {(int)E, (int)k, (int)L[10], (int)L[11], (int)L[12], L[13]};
  float weight[k];
  int32_t expert[k];
  if (nt_moe_route_token(&rc, logits, DT_F32, 0, ptr_at(L, 6), (int)L[7], 0, weight, expert)) {
    atomic_store(&m->team->failed, 1);
    for (int64_t q = 0; q < k; q++) weight[q] = 0.0f, expert[q] = 0;
  }
  const void *up = ptr_at(L, 14), *down = ptr_at(L, 16);
  int updt = (int)L[15], downdt = (int)L[17];
  size_t upsize = updt == DT_BF16 ? 2 : 4, downsize = downdt == DT_BF16 ? 2 : 4;
  segment_t ups[MAX_SEGMENTS];
  for (int64_t q = 0; q < k; q++)
    ups[q] = (segment_t){(const char *)up + (size_t)(expert[q] * I * H) * upsize, updt, NULL, DT_F32, I, act + q * I, EPI_RELU2};
  gemv_phase(m, ups, (int)k, xn, H, XP);

  float *xp = XP;
#if BF16_PAIRS
  for (int64_t q = 0; q < k; q++)
    if (downdt == DT_BF16) permute_x(act + q * I, I, xp + q * I);
  if ((int)L[22] == DT_BF16) permute_x(shared, Is, xp + k * I);
#endif
  const void *sdown = ptr_at(L, 21), *sbias = ptr_at(L, 26);
  int sdt = (int)L[22], sbdt = (int)L[27];
  size_t ssize = sdt == DT_BF16 ? 2 : 4;
  int64_t chunks = (H + GEMV_CHUNK - 1) / GEMV_CHUNK;
  for (int64_t item = claim(m, chunks); item >= 0; item = claim(m, chunks)) {
    int64_t r1 = (item + 1) * GEMV_CHUNK < H ? (item + 1) * GEMV_CHUNK : H;
    for (int64_t j = item * GEMV_CHUNK; j < r1; j++) {
      float routed = 0.0f;
      for (int64_t q = 0; q < k; q++)
        routed += weight[q] * row_dot(act + q * I, xp + q * I, (const char *)down + (size_t)((expert[q] * H + j) * I) * downsize, downdt, I);
      float sh = row_dot(shared, xp + k * I, (const char *)sdown + (size_t)(j * Is) * ssize, sdt, Is);
      if (sbias) sh += rd(sbias, sbdt, j);
      s->h[j] += routed + sh;
    }
  }
  phase_end(m);
}

/* ---- the step ------------------------------------------------------------------------------ */

/* Scratch sizes (floats) from the table: a, b, y widths and the longest key range. */
static void scratch_widths(const double *hdr, const double *layers, int64_t *wa, int64_t *wb, int64_t *wy, int64_t *keys, int64_t *wk) {
  int64_t n = (int64_t)hdr[0];
  *wa = *wb = *wy = *keys = 1;
  *wk = (int64_t)hdr[1];
#define GROW(v, x) do { if ((x) > *(v)) *(v) = (x); } while (0)
  for (int64_t i = 0; i < n; i++) {
    const double *L = layers + i * LAYER_SLOTS;
    int kind = (int)L[0];
    if (kind == KIND_MAMBA) {
      int64_t heads = (int64_t)L[23], P = (int64_t)L[24], G = (int64_t)L[25], N = (int64_t)L[26];
      int64_t dInner = heads * P, convDim = dInner + 2 * G * N;
      GROW(wa, dInner + convDim + heads);
      GROW(wb, convDim);
      GROW(wy, dInner);
      GROW(wk, dInner);
    } else if (kind == KIND_ATTENTION) {
      int64_t width = (int64_t)L[14] * (int64_t)L[16];
      GROW(wb, width);
      GROW(wy, width);
      GROW(wk, width);
      GROW(keys, (int64_t)L[18] * ((int64_t)L[14] / (int64_t)L[15]));
    } else if (kind == KIND_MOE) {
      int64_t routedRows = (int64_t)L[9] * (int64_t)L[18] + (int64_t)L[23];
      GROW(wa, (int64_t)L[8] + routedRows);
      GROW(wk, routedRows);
    } else {
      GROW(wa, (int64_t)L[8]);
      GROW(wk, (int64_t)L[8]);
    }
  }
#undef GROW
}

/* Floats of scratch a step with this table needs on `threads` threads: the buffers of scratch_t, then the work counters. */
EXPORT double nt_decode_scratch_floats(const double *table, int threads) {
  int64_t wa, wb, wy, keys, wk, H = (int64_t)table[1];
  scratch_widths(table, table + HEADER_SLOTS, &wa, &wb, &wy, &keys, &wk);
  return (double)(H + threads * H + wa + wb + wy + threads * keys + threads * wk + counter_floats((int64_t)table[0], threads));
}

/*
 * table (f64): header [HEADER_SLOTS], then LAYER_SLOTS per layer. Pointers are addresses; a "dt"
 * is a dtype code (f32 0, bf16 1); an absent optional pointer is 0.
 * header: 0 layers, 1 hidden H, 2 lm_head rows V, 3 token id, 4 embedding [E, H], 5 its dt,
 *   6 norm_f weight, 7 dt, 8 eps, 9 lm_head [V, H], 10 dt, 11 lm_head bias, 12 dt,
 *   13 logits (f32 [V]), 14 scratch (f32), 15 scratch floats, 16 embedding rows E.
 * every layer: 0 kind (0 mamba, 1 attention, 2 mlp), 1 pre-norm weight, 2 dt, 3 eps.
 * mamba: 4 in_proj [d_inner+conv_dim+heads, H], 5 dt, 6 out_proj [H, d_inner], 7 dt, 8 conv weight
 *   [conv_dim, K], 9 dt, 10 conv bias, 11 dt, 12 dt_bias [heads], 13 dt, 14 A_log, 15 dt, 16 D, 17 dt,
 *   18 gated norm weight [d_inner], 19 dt, 20 eps, 21 conv state f32 [conv_dim, K], 22 ssm state
 *   f32 [heads, P, N], 23 heads, 24 P, 25 groups, 26 N, 27 K, 28 clamp dt, 29 lo, 30 hi,
 *   31 in_proj bias, 32 dt, 33 out_proj bias, 34 dt.
 * attention: 4 q [nq·d, H], 5 dt, 6 k [nkv·d, H], 7 dt, 8 v, 9 dt, 10 o [H, nq·d], 11 dt, 12 K cache,
 *   13 V cache (f32 [nkv, capacity, d]), 14 nq, 15 nkv, 16 d, 17 capacity, 18 keys (cached positions
 *   including the new token, whose slot is keys − 1), 19 scale, 20 key mask (f32 [capacity], 1 =
 *   token) or 0, 21/22 q bias/dt, 23/24 k bias/dt, 25/26 v bias/dt, 27/28 o bias/dt.
 * mlp: 4 up [I, H], 5 dt, 6 down [H, I], 7 dt, 8 I, 9/10 up bias/dt, 11/12 down bias/dt.
 * moe: 4 router [E, H], 5 dt, 6 correction bias [E] or 0, 7 dt, 8 E, 9 k (≤ 64), 10 n_group,
 *   11 topk_group, 12 norm_topk_prob, 13 routed scaling, 14 experts' up [E, I, H], 15 dt, 16 experts'
 *   down [E, H, I], 17 dt, 18 I, 19 shared up [Is, H], 20 dt, 21 shared down [H, Is], 22 dt, 23 Is,
 *   24/25 shared up bias/dt, 26/27 shared down bias/dt.
 * Returns 0, -1 (token id outside the vocabulary), -2 (scratch too small) or -3 (a MoE routing ran
 * short). The step allocates nothing: its buffers and work counters are in the caller's scratch, so
 * steps on different threads (Bun Workers) with their own scratch run concurrently.
 */
EXPORT int nt_decode_step(const double *table) {
  int64_t layers = (int64_t)table[0], H = (int64_t)table[1], V = (int64_t)table[2], id = (int64_t)table[3];
  if (id < 0 || id >= (int64_t)table[16]) return -1;
  int threads = nt_threads();
  if (table[15] < nt_decode_scratch_floats(table, threads)) return -2;
  const double *lt = table + HEADER_SLOTS;
  int64_t wa, wb, wy, keys, wk;
  scratch_widths(table, lt, &wa, &wb, &wy, &keys, &wk);
  float *base = (float *)ptr_at(table, 14);
  scratch_t s = {.h = base, .xn = base + H, .hidden = H, .max_scores = keys, .max_inner = wk};
  s.a = s.xn + threads * H;
  s.b = s.a + wa;
  s.y = s.b + wb;
  s.scores = s.y + wy;
  s.xp = s.scores + threads * keys;

  const void *emb = ptr_at(table, 4);
  int embdt = (int)table[5];
  for (int64_t i = 0; i < H; i++) s.h[i] = rd(emb, embdt, id * H + i);

  /* The counters follow the buffers, on a line of their own; zero at the start of every step. */
  uintptr_t after = (uintptr_t)(s.xp + threads * wk);
  _Atomic int *counters = (_Atomic int *)((after + LINE_BYTES - 1) & ~(uintptr_t)(LINE_BYTES - 1));
  memset(counters, 0, sizeof(_Atomic int) * (size_t)(step_phases(layers) * threads * COUNTER_STRIDE));
  team_t team = {.counters = counters};
  atomic_init(&team.barrier.arrived, 0);
  atomic_init(&team.barrier.sense, 0);
  atomic_init(&team.barrier.sleepers, 0);
  atomic_init(&team.failed, 0);
#pragma omp parallel num_threads(threads)
  {
    member_t m = {&team, omp_thread_id(), 1, 0, 0};
#ifdef _OPENMP
    m.nthreads = omp_get_num_threads();
#endif
    float *xn = s.xn + m.tid * H;
    for (int64_t i = 0; i < layers; i++) {
      const double *L = lt + i * LAYER_SLOTS;
      rms_norm(s.h, ptr_at(L, 1), (int)L[2], (float)L[3], H, xn);
      switch ((int)L[0]) {
        case KIND_MAMBA: mamba_layer(&m, L, &s, xn); break;
        case KIND_ATTENTION: attention_layer(&m, L, &s, xn); break;
        case KIND_MOE: moe_layer(&m, L, &s, xn); break;
        default: mlp_layer(&m, L, &s, xn); break;
      }
    }
    rms_norm(s.h, ptr_at(table, 6), (int)table[7], (float)table[8], H, xn);
    segment_t head = {ptr_at(table, 9), (int)table[10], ptr_at(table, 11), (int)table[12], V, (float *)ptr_at(table, 13), EPI_STORE};
    gemv_phase(&m, &head, 1, xn, H, s.xp + m.tid * s.max_inner);
  }
  return atomic_load(&team.failed) ? -3 : 0;
}
