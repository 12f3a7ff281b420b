/* AdamW update in place on f32 parameters and moments (decoupled weight decay, bias corrections folded into the coefficients). */
#include "native.h"
#include "vmath.h"

#include <math.h>

/* params: n, offsets p, g, m, v, beta1, beta2, eps, decay, step_size, bias2_sqrt, grad scale (g·scale as an f32, as the clip's scaled copy). */
EXPORT int nt_adamw(const double *params, float *p, const float *g, float *m, float *v) {
  int64_t n = (int64_t)params[0];
  p += (int64_t)params[1];
  g += (int64_t)params[2];
  m += (int64_t)params[3];
  v += (int64_t)params[4];
  float b1 = (float)params[5], b2 = (float)params[6], eps = (float)params[7], decay = (float)params[8], step = (float)params[9], bc2 = (float)params[10];
  float gs = (float)params[11];
  /* Blocks of whole vectors per thread; the vector loop is the scalar formula lane by lane. */
  int64_t vecs = n / VLEN;
  vf vb1 = vbroadcast(b1), vb2 = vbroadcast(b2), v1b1 = vbroadcast(1.0f - b1), v1b2 = vbroadcast(1.0f - b2);
  vf veps = vbroadcast(eps), vdecay = vbroadcast(decay), vstep = vbroadcast(step), vbc2 = vbroadcast(bc2), vgs = vbroadcast(gs);
#pragma omp parallel for schedule(static) if (n * 16 >= PARALLEL_MIN_WORK)
  for (int64_t q = 0; q < vecs; q++) {
    int64_t i = q * VLEN;
    vf gi = vload(g + i) * vgs;
    vf mi = vb1 * vload(m + i) + v1b1 * gi;
    vf vi = vb2 * vload(v + i) + v1b2 * gi * gi;
    vstore(m + i, mi);
    vstore(v + i, vi);
    vstore(p + i, vload(p + i) * vdecay - vstep * mi / (vsqrt(vi) / vbc2 + veps));
  }
  for (int64_t i = vecs * VLEN; i < n; i++) {
    float gi = g[i] * gs;
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrtf(vi) / bc2 + eps);
  }
  return 0;
}
