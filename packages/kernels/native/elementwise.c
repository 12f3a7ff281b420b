/*
 * Elementwise ops over up to three strided, broadcast operands (f32 or bf16; scalars folded in by
 * the caller as operands with all-zero strides are not needed: scalars are p0/p1), f32 result.
 * Shapes arrive collapsed (usually rank 1–2); rows of the innermost dimension are split across
 * threads. The op codes are listed in elementwise.native.ts.
 */
#include "native.h"

#include <math.h>

enum { MAX_RANK = 6, MAX_OPS = 3 };

static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

static inline float apply(int op, float a, float b, float p0, float p1) {
  switch (op) {
    case 0: return -a;
    case 1: return fabsf(a);
    case 2: return expf(a);
    case 3: return logf(a);
    case 4: return sqrtf(a);
    case 5: return 1.0f / sqrtf(a);
    case 6: return 1.0f / a;
    case 7: return a * a;
    case 8: return sigmoidf(a);
    case 9: return a * sigmoidf(a);
    case 10: return softplusf(a);
    case 11: return a > 0.0f || a != a ? a : 0.0f;
    case 12: { float r = a > 0.0f || a != a ? a : 0.0f; return r * r; }
    case 13: return tanhf(a);
    case 14: return a != a ? a : fminf(fmaxf(a, p0), p1);
    case 15: return a;
    /* binary */
    case 20: return a + b;
    case 21: return a - b;
    case 22: return a * b;
    case 23: return a / b;
    case 24: return a != a || b != b ? NAN : fmaxf(a, b);
    case 25: return a != a || b != b ? NAN : fminf(a, b);
    /* gradients: a = x, b = upstream g */
    case 40: { float s = sigmoidf(a); return b * s * (1.0f - s); }
    case 41: { float s = sigmoidf(a); return b * s * (1.0f + a * (1.0f - s)); }
    case 42: return a > 20.0f ? b : b * sigmoidf(a);
    case 43: return a > 0.0f ? b : 0.0f;
    case 44: return 2.0f * (a > 0.0f || a != a ? a : 0.0f) * b;
    case 45: { float t = tanhf(a); return b * (1.0f - t * t); }
    case 46: return 2.0f * a * b;
    case 47: return b * expf(a);
    case 48: return -b;
    default: return NAN;
  }
}

static inline float read(const void *p, int dtype, int64_t i) {
  return dtype == DT_BF16 ? bf16_to_f32(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* f32 → bf16 bits, round to nearest even (NaN stays a quiet NaN), as the TypeScript f32ToBf16Bits. */
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/*
 * The hot unary ops over contiguous f32 [i0, i1), a vector at a time (relu² follows every MLP's up
 * projection, SiLU every conv); returns 0 for ops without a vector form here.
 */
static int unary_contiguous(int op, const float *a, float *dst, int64_t i0, int64_t i1) {
  if (op != 9 && op != 11 && op != 12 && op != 15 && op != 2) return 0;
  int64_t i = i0;
  const vf zero = vbroadcast(0.0f);
  for (; i + VLEN <= i1; i += VLEN) {
    vf v = vload(a + i);
    /* v != v keeps NaN, as the scalar ops do. */
    vf r = op == 9 ? vsilu(v) : op == 2 ? vexp(v) : op == 15 ? v : vselect((v > zero) | (v != v), v, zero);
    vstore(dst + i, op == 12 ? r * r : r);
  }
  for (; i < i1; i++) dst[i] = apply(op, a[i], 0.0f, 0.0f, 0.0f);
  return 1;
}

/*
 * params: op, rank, nops, p0, p1, out_offset, out_dtype (f32 or bf16), shape[rank], out_strides[rank],
 *   then per operand: dtype, offset, strides[rank].
 */
EXPORT int nt_elementwise(const double *params, void *out_data, const void *x0, const void *x1, const void *x2) {
  int op = (int)params[0], rank = (int)params[1], nops = (int)params[2];
  float p0 = (float)params[3], p1 = (float)params[4];
  if (rank < 1 || rank > MAX_RANK || nops < 1 || nops > MAX_OPS) return -1;
  int64_t out_off = (int64_t)params[5];
  int out_dt = (int)params[6];
  float *out = out_data;
  uint16_t *out16 = out_data;
  int64_t shape[MAX_RANK], ostr[MAX_RANK], istr[MAX_OPS][MAX_RANK], ioff[MAX_OPS];
  int idt[MAX_OPS];
  const void *in[MAX_OPS] = {x0, x1, x2};
  const double *q = params + 7;
  for (int d = 0; d < rank; d++) shape[d] = (int64_t)q[d];
  for (int d = 0; d < rank; d++) ostr[d] = (int64_t)q[rank + d];
  q += 2 * rank;
  for (int o = 0; o < nops; o++) {
    idt[o] = (int)q[0];
    ioff[o] = (int64_t)q[1];
    for (int d = 0; d < rank; d++) istr[o][d] = (int64_t)q[2 + d];
    q += 2 + rank;
  }
  int64_t inner = shape[rank - 1], rows = 1;
  for (int d = 0; d < rank - 1; d++) rows *= shape[d];
  int contiguous = ostr[rank - 1] == 1 && out_dt == DT_F32;
  for (int o = 0; o < nops; o++) contiguous &= istr[o][rank - 1] == 1 && idt[o] == DT_F32;
  /* Work items: (row, block of the innermost dimension), so one long contiguous row splits too. */
  const int64_t BLOCK = 4096;
  int64_t blocks = (inner + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static) if (rows * inner * 8 >= PARALLEL_MIN_WORK)
  for (int64_t item = 0; item < rows * blocks; item++) {
    int64_t r = item / blocks, i0 = (item % blocks) * BLOCK, i1 = i0 + BLOCK < inner ? i0 + BLOCK : inner;
    int64_t rem = r, obase = out_off, ibase[MAX_OPS];
    for (int o = 0; o < nops; o++) ibase[o] = ioff[o];
    for (int d = rank - 2; d >= 0; d--) {
      int64_t c = rem % shape[d];
      rem /= shape[d];
      obase += c * ostr[d];
      for (int o = 0; o < nops; o++) ibase[o] += c * istr[o][d];
    }
    if (out_dt == DT_BF16) {
      for (int64_t i = i0; i < i1; i++) {
        float a = read(in[0], idt[0], ibase[0] + i * istr[0][rank - 1]);
        float b = nops > 1 ? read(in[1], idt[1], ibase[1] + i * istr[1][rank - 1]) : 0.0f;
        out16[obase + i * ostr[rank - 1]] = f32_to_bf16(apply(op, a, b, p0, p1));
      }
      continue;
    }
    float *dst = out + obase;
    if (contiguous && nops == 2 && op >= 20 && op <= 22) {
      const float *a = (const float *)in[0] + ibase[0], *b = (const float *)in[1] + ibase[1];
      if (op == 20) for (int64_t i = i0; i < i1; i++) dst[i] = a[i] + b[i];
      else if (op == 21) for (int64_t i = i0; i < i1; i++) dst[i] = a[i] - b[i];
      else for (int64_t i = i0; i < i1; i++) dst[i] = a[i] * b[i];
      continue;
    }
    if (contiguous && nops == 1 && unary_contiguous(op, (const float *)in[0] + ibase[0], dst, i0, i1)) continue;
    for (int64_t i = i0; i < i1; i++) {
      float a = read(in[0], idt[0], ibase[0] + i * istr[0][rank - 1]);
      float b = nops > 1 ? read(in[1], idt[1], ibase[1] + i * istr[1][rank - 1]) : 0.0f;
      dst[i * ostr[rank - 1]] = apply(op, a, b, p0, p1);
    }
  }
  return 0;
}
