/*
 * The Mamba2 state's one-token update, one state row at a time (the state dimension as the vector
 * dimension): scan.c's nt_state_update and the mamba layer of decode.c's whole step.
 */
#ifndef NEMOTRON_SSM_UPDATE_H
#define NEMOTRON_SSM_UPDATE_H

#include "native.h"
#include "vmath.h"

/* s[n] = decay·s[n] + k·b[n] over n, returning Σ s[n]·c[n]. */
static inline float ssm_update_row(float *restrict s, const float *restrict b, const float *restrict c, float decay, float k, int64_t n) {
  vf acc = {0};
  vf vd = vbroadcast(decay), vk = vbroadcast(k);
  int64_t i = 0;
  for (; i + VLEN <= n; i += VLEN) {
    vf v = vd * vload(s + i) + vk * vload(b + i);
    vstore(s + i, v);
    acc += v * vload(c + i);
  }
  float r = vsum(acc);
  for (; i < n; i++) {
    s[i] = decay * s[i] + k * b[i];
    r += s[i] * c[i];
  }
  return r;
}

#endif
