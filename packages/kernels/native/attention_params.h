/*
 * The params (f64) that nt_attention and nt_attention_backward share, read once into a struct:
 *   0 batch, 1 queries, 2 q heads, 3 kv heads, 4 head dim, 5 value dim, 6 keys, 7 causal, 8 scale,
 *   9 query offset (positions already cached); then per operand five slots:
 *   q 10–14, k 15–19, v 20–24: dtype, offset, batch / position / head strides;
 *   mask 25–29, seq ids 30–34: present, dtype, offset, batch / key strides.
 * What follows slot 34 differs between the two entry points and is read there.
 */
#ifndef NEMOTRON_ATTENTION_PARAMS_H
#define NEMOTRON_ATTENTION_PARAMS_H

#include "native.h"

/* A [B, S, H, D] operand with a dense last dim. */
typedef struct {
  int dtype;
  int64_t offset, batch, pos, head;
} att_operand;

/* An optional [B, keys] row (key mask, sequence ids). */
typedef struct {
  int present, dtype;
  int64_t offset, batch, pos;
} att_keys;

typedef struct {
  int64_t batch, queries, hq, hkv, hd, vd, keys, qoff;
  int causal;
  float scale;
  att_operand q, k, v;
  att_keys mask, seq;
} att_params;

static inline att_operand att_read_operand(const double *p) {
  return (att_operand){(int)p[0], (int64_t)p[1], (int64_t)p[2], (int64_t)p[3], (int64_t)p[4]};
}

static inline att_keys att_read_keys(const double *p) {
  return (att_keys){(int)p[0], (int)p[1], (int64_t)p[2], (int64_t)p[3], (int64_t)p[4]};
}

static inline att_params att_read_params(const double *p) {
  att_params a = {(int64_t)p[0], (int64_t)p[1], (int64_t)p[2], (int64_t)p[3], (int64_t)p[4], (int64_t)p[5], (int64_t)p[6], (int64_t)p[9],
                  (int)p[7], (float)p[8]};
  a.q = att_read_operand(p + 10);
  a.k = att_read_operand(p + 15);
  a.v = att_read_operand(p + 20);
  a.mask = att_read_keys(p + 25);
  a.seq = att_read_keys(p + 30);
  return a;
}

/* Element index of row (b, position i, head h) of an operand. */
static inline int64_t att_at(const att_operand *o, int64_t b, int64_t i, int64_t h) { return o->offset + b * o->batch + i * o->pos + h * o->head; }

/* Element index of key j of batch row b in a mask or sequence-id row. */
static inline int64_t att_key(const att_keys *r, int64_t b, int64_t j) { return r->offset + b * r->batch + j * r->pos; }

#endif
