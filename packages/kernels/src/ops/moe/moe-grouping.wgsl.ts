/**
 * Groups the (token, slot) pairs of a routing by expert, on the device and without a readback:
 * per-chunk expert histograms, a per-expert exclusive scan over chunks, padded segment starts, and
 * a stable scatter (one invocation does all of it when the pairs fit one chunk). Each expert owns
 * a segment of rows padded to the GEMM's row tile so a workgroup's rows never straddle two
 * experts; within a segment, pairs keep their (token, slot) order, so the grouping (and
 * everything computed from it) is deterministic.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedTensor } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

/** Rows per grouped-GEMM workgroup for prefill-sized calls; expert segments are padded to it. */
const PREFILL_ROW_TILE = 8;
/** Marks a padding row in `rowPairs`, and a pair whose expert index was out of range in `pairRows`. */
export const NO_ROW = 0xffffffff;
/** Pairs per invocation of the histogram and scatter kernels. */
const PAIR_CHUNK = 256;
const WG = 64;

/** The pairs of one routing, grouped by expert (the layout a backward pass will reuse). */
export interface ExpertGrouping {
  experts: number;
  /** Segments are padded to a multiple of this many rows (the GEMM's rows per workgroup). */
  rowTile: number;
  /** Number of (token, slot) pairs: tokens · k; pair p = token · k + slot. */
  pairs: number;
  /** Rows allocated for the grouped activations: the most any routing of these pairs can use. */
  rowCapacity: number;
  /** [E + 1] u32: first row of each expert's segment; entry E = rows in use. */
  segmentStarts: Tensor;
  /** [E] u32: pairs routed to each expert. */
  counts: Tensor;
  /** [rowCapacity] u32: the pair in each row (NO_ROW for padding; rows past the last segment are unset). */
  rowPairs: Tensor;
  /** [pairs] u32: the row of each pair (NO_ROW when its expert index is out of range). */
  pairRows: Tensor;
}

/**
 * The row tile for a call: with fewer pairs than experts (decode) most segments hold one row, so
 * tiles of one row waste nothing; otherwise 8-row tiles let each weight load serve 8 rows. Chosen
 * from the sizes only, never from the routing.
 */
export function rowTileFor(pairs: number, experts: number): number {
  return pairs <= experts ? 1 : PREFILL_ROW_TILE;
}

/**
 * Rows needed in the worst case: every pair, plus up to rowTile − 1 padding rows for each of the
 * experts that receive a pair (at most min(E, pairs) of them). Never depends on the routing.
 */
export function rowCapacity(pairs: number, experts: number, rowTile: number): number {
  return pairs + Math.min(experts, pairs) * (rowTile - 1);
}

/** Bytes of the largest binding a grouping of `pairs` pairs over `experts` experts needs. */
export function groupingBindingBytes(pairs: number, experts: number): number {
  const capacity = rowCapacity(pairs, experts, rowTileFor(pairs, experts));
  return 4 * Math.max(Math.ceil(pairs / PAIR_CHUNK) * experts, capacity, pairs, experts + 1);
}

export function disposeGrouping(g: ExpertGrouping): void {
  g.segmentStarts.dispose();
  g.counts.dispose();
  g.rowPairs.dispose();
  g.pairRows.dispose();
}

/**
 * Groups `pairs` expert indices (i32) starting at element `first` of `indices` (contiguous) by
 * expert. Indices outside [0, experts) are left out of every segment.
 */
export function groupByExpert(device: WebGpuDevice, indices: Tensor, first: number, pairs: number, experts: number): ExpertGrouping {
  const chunks = Math.ceil(pairs / PAIR_CHUNK);
  const rowTile = rowTileFor(pairs, experts);
  const capacity = rowCapacity(pairs, experts, rowTile);
  const grouping: ExpertGrouping = {
    experts,
    rowTile,
    pairs,
    rowCapacity: capacity,
    segmentStarts: empty([experts + 1], { dtype: 'u32', device }),
    counts: empty([experts], { dtype: 'u32', device }),
    rowPairs: empty([capacity], { dtype: 'u32', device }),
    pairRows: empty([pairs], { dtype: 'u32', device }),
  };
  const idx: NamedTensor = { name: 'idx', tensor: indices, window: { start: first, length: pairs }, what: 'moeExperts indices' };
  const starts: NamedTensor = { name: 'starts', tensor: grouping.segmentStarts, what: 'moeExperts segment starts' };
  const counts: NamedTensor = { name: 'counts', tensor: grouping.counts, what: 'moeExperts counts' };
  const rowPairs: NamedTensor = { name: 'row_pairs', tensor: grouping.rowPairs, what: 'moeExperts row pairs' };
  const pairRows: NamedTensor = { name: 'pair_rows', tensor: grouping.pairRows, what: 'moeExperts pair rows' };
  const detail = `pairs=${pairs} experts=${experts}`;
  if (chunks === 1) {
    groupOneChunk(device, { idx, starts, counts, rowPairs, pairRows }, pairs, experts, rowTile, detail);
    return grouping;
  }
  const histogram = empty([chunks * experts], { dtype: 'u32', device });
  const hist: NamedTensor = { name: 'hist', tensor: histogram, what: 'moeExperts histogram' };
  // Loop bounds come from the uniform so the compiler does not unroll E-long loops; only the private
  // array sizes are baked into the sources.
  const chunkParams = () => new Params().u32('pairs', pairs).u32('chunks', chunks).u32('experts', experts);
  const chunkRange = `
  let c = ${flatIndex(WG)};
  if (c >= P.chunks) { return; }
  let p_end = min(P.pairs, (c + 1u) * ${PAIR_CHUNK}u);`;

  // 1. Per-chunk histogram of expert indices.
  let p = chunkParams();
  let bound = bindTensors(device, 'moeExperts', [idx, { ...hist, writable: true }], p);
  device.run({
    name: 'moe_histogram',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {${chunkRange}
  var count: array<u32, ${experts}>;
  for (var q = c * ${PAIR_CHUNK}u; q < p_end; q++) {
    let e = u32(idx[P.idxOff + q]);
    if (e < P.experts) { count[e] += 1u; }
  }
  for (var e = 0u; e < P.experts; e++) { hist[c * P.experts + e] = count[e]; }
}`,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(chunks, WG),
    detail,
  });

  // 2. Per expert: exclusive scan over chunks (in place) and the expert's total.
  p = new Params().u32('chunks', chunks).u32('experts', experts);
  bound = bindTensors(
    device,
    'moeExperts',
    [
      { ...hist, writable: true },
      { ...counts, writable: true },
    ],
    p,
  );
  device.run({
    name: 'moe_expert_scan',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let e = ${flatIndex(WG)};
  if (e >= P.experts) { return; }
  var running = 0u;
  for (var c = 0u; c < P.chunks; c++) {
    let n = hist[c * P.experts + e];
    hist[c * P.experts + e] = running;
    running += n;
  }
  counts[e] = running;
}`,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(experts, WG),
    detail,
  });

  // 3. Padded segment starts and padding markers: one invocation, E iterations.
  p = new Params().u32('experts', experts).u32('rowTile', rowTile);
  bound = bindTensors(device, 'moeExperts', [counts, { ...starts, writable: true }, { ...rowPairs, writable: true }], p);
  device.run({
    name: 'moe_segments',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(1)
fn main() {
  var start = 0u;
  for (var e = 0u; e < P.experts; e++) {
    starts[e] = start;
    let used = start + counts[e];
    start += (counts[e] + P.rowTile - 1u) / P.rowTile * P.rowTile;
    for (var r = used; r < start; r++) { row_pairs[r] = ${NO_ROW}u; }
  }
  starts[P.experts] = start;
}`,
    params: p,
    bindings: bound.ranges,
    workgroups: [1, 1, 1],
    detail,
  });

  // 4. Stable scatter: each chunk places its pairs after the earlier chunks' pairs of the same expert.
  p = chunkParams();
  bound = bindTensors(device, 'moeExperts', [idx, hist, starts, { ...rowPairs, writable: true }, { ...pairRows, writable: true }], p);
  device.run({
    name: 'moe_scatter',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {${chunkRange}
  var next: array<u32, ${experts}>;
  for (var e = 0u; e < P.experts; e++) { next[e] = starts[e] + hist[c * P.experts + e]; }
  for (var q = c * ${PAIR_CHUNK}u; q < p_end; q++) {
    let e = u32(idx[P.idxOff + q]);
    if (e < P.experts) {
      let r = next[e];
      next[e] = r + 1u;
      row_pairs[r] = q;
      pair_rows[q] = r;
    } else {
      pair_rows[q] = ${NO_ROW}u;
    }
  }
}`,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(chunks, WG),
    detail,
  });
  histogram.dispose();
  return grouping;
}

interface GroupingBindings {
  idx: NamedTensor;
  starts: NamedTensor;
  counts: NamedTensor;
  rowPairs: NamedTensor;
  pairRows: NamedTensor;
}

/**
 * The whole grouping in one invocation, for calls whose pairs fit one chunk (decode): the four
 * dispatches of the general path would cost more than their work on software adapters.
 */
function groupOneChunk(device: WebGpuDevice, b: GroupingBindings, pairs: number, experts: number, rowTile: number, detail: string): void {
  const p = new Params().u32('pairs', pairs).u32('experts', experts).u32('rowTile', rowTile);
  const written = [b.starts, b.counts, b.rowPairs, b.pairRows].map((t) => ({ ...t, writable: true }));
  const bound = bindTensors(device, 'moeExperts', [b.idx, ...written], p);
  device.run({
    name: 'moe_group_small',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(1)
fn main() {
  var next: array<u32, ${experts}>;
  for (var q = 0u; q < P.pairs; q++) {
    let e = u32(idx[P.idxOff + q]);
    if (e < P.experts) { next[e] += 1u; }
  }
  var start = 0u;
  for (var e = 0u; e < P.experts; e++) {
    let n = next[e];
    let used = start + n;
    counts[e] = n;
    starts[e] = start;
    next[e] = start;
    start += (n + P.rowTile - 1u) / P.rowTile * P.rowTile;
    for (var r = used; r < start; r++) { row_pairs[r] = ${NO_ROW}u; }
  }
  starts[P.experts] = start;
  for (var q = 0u; q < P.pairs; q++) {
    let e = u32(idx[P.idxOff + q]);
    if (e < P.experts) {
      let r = next[e];
      next[e] = r + 1u;
      row_pairs[r] = q;
      pair_rows[q] = r;
    } else {
      pair_rows[q] = ${NO_ROW}u;
    }
  }
}`,
    params: p,
    bindings: bound.ranges,
    workgroups: [1, 1, 1],
    detail,
  });
}
