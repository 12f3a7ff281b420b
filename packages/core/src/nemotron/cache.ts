/**
 * `NemotronHybridCache`: the decoding state of a Nemotron-H model (spec §3.1), one typed entry per
 * layer — attention K/V, or a Mamba layer's conv window and SSM state — with a batch dimension.
 *
 * - Attention K and V are f32 [B, Hkv, capacity, D] (the `bhsd` layout the attention kernel reads
 *   in place). Capacity grows in blocks of `blockSize` positions: a new token is written into its
 *   slot, and only crossing a block boundary reallocates and copies (once per block, not per token).
 * - Mamba: `conv` f32 [B, conv_dim, K], the last K pre-conv inputs of x | B | C (oldest first), and
 *   `ssm` f32 [B, nh, p, N] (mamba_ssm_cache_dtype float32).
 * - `keyMask` f32 [B, capacity] (1 = token, 0 = padding) exists once a prompt had padding; positions
 *   not yet written hold 1, so decoded tokens need no mask update.
 * - `length` is the number of cached positions on the host; `position` (i32 [1]) holds the same
 *   number on the device, for recorded decode steps that read it (K/V slot, attention length).
 *   Both move only through `decode.ts` (prefill, decode step, recorded decode step), which calls
 *   `reserve`, `advanceDevice` and `advanceHost` in the order each path needs.
 *
 * The cache owns its tensors (kept out of any enclosing `tidy` scope); MLP and MoE layers have no
 * entry. Prefill and decode write into the existing tensors, so their buffers change only on growth,
 * `select`/`reorder` and the first padded prompt.
 */
import {
  bytesPerElement,
  copyInto,
  full,
  getDefaultDevice,
  incrementInPlace,
  indexSelect,
  keep,
  narrow,
  noGrad,
  tensor,
  tidy,
  zeros,
  type Device,
  type Tensor,
} from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';

export interface AttentionLayerCache {
  readonly kind: 'attention';
  /** f32 [B, Hkv, capacity, D]. */
  k: Tensor;
  /** f32 [B, Hkv, capacity, D]. */
  v: Tensor;
}

export interface MambaLayerCache {
  readonly kind: 'mamba';
  /** f32 [B, conv_dim, K]: the last K pre-conv inputs (x | B | C), oldest first. */
  conv: Tensor;
  /** f32 [B, nh, p, N]. */
  ssm: Tensor;
}

export type LayerCache = AttentionLayerCache | MambaLayerCache;

export interface HybridCacheOptions {
  /** Rows (default 1). */
  batch?: number;
  /** Default: the default device. */
  device?: Device;
  /** Attention positions added per growth (default 256). */
  blockSize?: number;
  /** Positions to allocate at once (default one block); rounded up to whole blocks. */
  capacity?: number;
  /**
   * Only these backbone layers get an entry (a pipeline stage's share of the cache); default all.
   * The others answer `layer(i)` with null, like MLP and MoE layers.
   */
  layers?: readonly number[];
}

/** Bytes the cache holds, by part. */
export interface CacheMemoryStats {
  readonly attentionBytes: number;
  readonly mambaBytes: number;
  readonly maskBytes: number;
  readonly totalBytes: number;
  readonly batch: number;
  readonly length: number;
  readonly capacity: number;
}

/** What a prefill with a cache tells a layer besides its activations. */
export interface CachedPrefill {
  /** The layer's entry (written: K/V at [past, past + L), the conv window, the SSM state). */
  readonly entry: LayerCache;
  /** Positions cached before this call. */
  readonly past: number;
  /** f32 [B, capacity], the new positions already written; null without padding. */
  readonly keyMask: Tensor | null;
}

/** What a decode step (one token per row, after the device position was advanced) tells a layer. */
export interface CachedDecode {
  readonly entry: LayerCache;
  /** i32 [1]: cached positions including the new token (its slot is position − 1). */
  readonly position: Tensor;
  readonly keyMask: Tensor | null;
}

export class NemotronHybridCache {
  readonly blockSize: number;
  readonly device: Device;
  private entries: (LayerCache | null)[];
  private rows: number;
  private cached = 0;
  private slots: number;
  private mask: Tensor | null = null;
  private counter: Tensor;
  private disposed = false;

  constructor(
    readonly config: NemotronHConfig,
    options: HybridCacheOptions = {},
  ) {
    const batch = options.batch ?? 1;
    this.blockSize = options.blockSize ?? 256;
    if (!Number.isInteger(batch) || batch < 1) throw new Error(`NemotronHybridCache: batch must be a positive integer, got ${batch}`);
    if (!Number.isInteger(this.blockSize) || this.blockSize < 1)
      throw new Error(`NemotronHybridCache: blockSize must be a positive integer, got ${this.blockSize}`);
    const capacity = options.capacity ?? this.blockSize;
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`NemotronHybridCache: capacity must be a positive integer, got ${capacity}`);
    this.device = options.device ?? getDefaultDevice();
    this.rows = batch;
    this.slots = this.roundUp(capacity);
    const device = this.device;
    const c = config;
    const only = options.layers ? new Set(options.layers) : null;
    if (only)
      for (const i of only)
        if (!Number.isInteger(i) || i < 0 || i >= c.layerKinds.length)
          throw new Error(`NemotronHybridCache: layer ${i} is outside 0..${c.layerKinds.length - 1}`);
    this.entries = c.layerKinds.map((kind, i): LayerCache | null => {
      if (only && !only.has(i)) return null;
      if (kind === 'attention') {
        const shape = [batch, c.numKeyValueHeads, this.slots, c.headDim];
        return { kind, k: keep(zeros(shape, { device })), v: keep(zeros(shape, { device })) };
      }
      if (kind === 'mamba') {
        return {
          kind,
          conv: keep(zeros([batch, c.convDim, c.convKernel], { device })),
          ssm: keep(zeros([batch, c.mambaNumHeads, c.mambaHeadDim, c.ssmStateSize], { device })),
        };
      }
      return null;
    });
    this.counter = keep(tensor(Int32Array.of(0), [1], { device }));
  }

  private roundUp(positions: number): number {
    return Math.ceil(positions / this.blockSize) * this.blockSize;
  }

  private assertAlive(what: string): void {
    if (this.disposed) throw new Error(`NemotronHybridCache.${what}: the cache was disposed`);
  }

  /** Rows of the cache. */
  get batch(): number {
    return this.rows;
  }

  /** Cached positions (HF's `get_seq_length`). */
  get length(): number {
    return this.cached;
  }

  getSeqLength(): number {
    return this.cached;
  }

  /** Attention positions allocated. */
  get capacity(): number {
    return this.slots;
  }

  /** i32 [1]: the cached positions, on the device. */
  get position(): Tensor {
    return this.counter;
  }

  /** f32 [B, capacity] (1 = token, 0 = padding), or null when no row was ever padded. */
  get keyMask(): Tensor | null {
    return this.mask;
  }

  /** The entry of layer `i` (null for MLP and MoE layers). */
  layer(i: number): LayerCache | null {
    this.assertAlive('layer');
    if (!Number.isInteger(i) || i < 0 || i >= this.entries.length)
      throw new Error(`NemotronHybridCache.layer: no layer ${i} (the model has ${this.entries.length})`);
    return this.entries[i]!;
  }

  /** Makes room for `extra` more positions, growing attention K/V (and the mask) by whole blocks. */
  reserve(extra: number): void {
    this.assertAlive('reserve');
    const needed = this.cached + extra;
    if (needed <= this.slots) return;
    const slots = this.roundUp(needed);
    const kept = this.cached;
    noGrad(() => {
      for (const entry of this.entries) {
        if (entry?.kind !== 'attention') continue;
        entry.k = this.grown(entry.k, 2, slots, kept, 0);
        entry.v = this.grown(entry.v, 2, slots, kept, 0);
      }
      if (this.mask) this.mask = this.grown(this.mask, 1, slots, kept, 1);
    });
    this.slots = slots;
  }

  /** A copy of `t` with `axis` grown to `size`: the first `kept` positions copied, the rest `fill`. */
  private grown(t: Tensor, axis: number, size: number, kept: number, fill: number): Tensor {
    const shape = t.shape.map((d, i) => (i === axis ? size : d));
    const out = keep(full(shape, fill, { device: this.device }));
    if (kept > 0) tidy(() => copyInto(narrow(out, axis, 0, kept), narrow(t, axis, 0, kept)));
    t.dispose();
    return out;
  }

  /**
   * Records the padding of `count` new positions starting at `length` (mask f32 [B, count], 1 =
   * token), allocating the key mask on the first padding seen. A null mask means all tokens.
   */
  writeKeyMask(mask: Tensor | null, count: number): void {
    this.assertAlive('writeKeyMask');
    if (this.cached + count > this.slots)
      throw new Error(`NemotronHybridCache.writeKeyMask: ${count} positions after ${this.cached} exceed the capacity ${this.slots} (reserve first)`);
    if (!mask) return;
    noGrad(() => {
      if (!this.mask) {
        this.mask = keep(full([this.rows, this.slots], 1, { device: this.device }));
      }
      tidy(() => copyInto(narrow(this.mask!, 1, this.cached, count), mask));
    });
  }

  /** Advances the device position by `n` (one kernel; may run inside a recorded step). */
  advanceDevice(n: number): void {
    this.assertAlive('advanceDevice');
    incrementInPlace(this.counter, n);
  }

  /** Advances the host length by `n` (the bookkeeping half of {@link advanceDevice}). */
  advanceHost(n: number): void {
    this.assertAlive('advanceHost');
    if (this.cached + n > this.slots) throw new Error(`NemotronHybridCache: ${n} positions after ${this.cached} exceed the capacity ${this.slots}`);
    this.cached += n;
  }

  /** Forgets every position: states zeroed, length 0, no padding. Buffers are kept. */
  reset(): void {
    this.assertAlive('reset');
    noGrad(() =>
      tidy(() => {
        const zero = zeros([1], { device: this.device });
        for (const entry of this.entries) {
          if (entry?.kind === 'mamba') {
            copyInto(entry.conv, zero);
            copyInto(entry.ssm, zero);
          }
        }
        copyInto(this.counter, zeros([1], { dtype: 'i32', device: this.device }));
        if (this.mask) copyInto(this.mask, full([1], 1, { device: this.device }));
      }),
    );
    this.cached = 0;
  }

  /**
   * Keeps the rows `indices` (any count, repeats allowed), in that order: HF's `reorder_cache` for
   * beams, or dropping finished rows.
   */
  select(indices: readonly number[]): void {
    this.assertAlive('select');
    if (indices.length === 0) throw new Error('NemotronHybridCache.select: no rows given');
    for (const i of indices)
      if (!Number.isInteger(i) || i < 0 || i >= this.rows) throw new Error(`NemotronHybridCache.select: row ${i} is outside [0, ${this.rows})`);
    noGrad(() => {
      const index = tensor(Int32Array.from(indices), [indices.length], { device: this.device });
      const pick = (t: Tensor) => {
        const out = keep(indexSelect(t, 0, index));
        t.dispose();
        return out;
      };
      for (const entry of this.entries) {
        if (entry?.kind === 'attention') {
          entry.k = pick(entry.k);
          entry.v = pick(entry.v);
        } else if (entry?.kind === 'mamba') {
          entry.conv = pick(entry.conv);
          entry.ssm = pick(entry.ssm);
        }
      }
      if (this.mask) this.mask = pick(this.mask);
      index.dispose();
    });
    this.rows = indices.length;
  }

  /** Reorders the rows (a permutation or any same-size selection): HF's `reorder_cache(beam_idx)`. */
  reorder(batchIndices: readonly number[]): void {
    if (batchIndices.length !== this.rows)
      throw new Error(`NemotronHybridCache.reorder: ${batchIndices.length} indices for ${this.rows} rows (use select to change the batch size)`);
    this.select(batchIndices);
  }

  /** Bytes held, by part. */
  memoryStats(): CacheMemoryStats {
    const bytes = (t: Tensor | null) => (t ? t.size * bytesPerElement(t.dtype) : 0);
    let attentionBytes = 0;
    let mambaBytes = 0;
    for (const entry of this.entries) {
      if (entry?.kind === 'attention') attentionBytes += bytes(entry.k) + bytes(entry.v);
      else if (entry?.kind === 'mamba') mambaBytes += bytes(entry.conv) + bytes(entry.ssm);
    }
    const maskBytes = bytes(this.mask) + bytes(this.counter);
    return {
      attentionBytes,
      mambaBytes,
      maskBytes,
      totalBytes: attentionBytes + mambaBytes + maskBytes,
      batch: this.rows,
      length: this.cached,
      capacity: this.slots,
    };
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** Frees every tensor of the cache. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const entry of this.entries) {
      if (entry?.kind === 'attention') {
        entry.k.dispose();
        entry.v.dispose();
      } else if (entry?.kind === 'mamba') {
        entry.conv.dispose();
        entry.ssm.dispose();
      }
    }
    this.mask?.dispose();
    this.counter.dispose();
    this.entries = [];
  }

  /** `using cache = new NemotronHybridCache(…)` frees it at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }
}
