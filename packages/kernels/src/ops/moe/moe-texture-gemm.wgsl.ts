/**
 * The grouped expert GEMM of {@link groupedGemm} on software rasterizers, built on the matmul's
 * texture tile (`texture-gemm.wgsl.ts`): A rows and the stacked weights [E, N, K] are packed into
 * textures read as storage textures (a storage-buffer load is a per-lane loop on llvmpipe), the
 * weights K-major in strips, one layer per expert — kept with the weight's storage when it does not
 * require gradients, like a `linear` weight. A workgroup takes one row tile of an expert segment
 * (segments are padded to the grouping's row tile, which is the tile's row count) and one strip of
 * columns; its rows look their A row up in `rowPairs` when the operand is gathered by token. All
 * experts go in one dispatch: textures have no binding-size limit.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { NAN_SAFE_F32 } from '../../runtime/wgsl';
import { noGrad } from '../../autograd/graph';
import { empty } from '../../creation';
import { cast, contiguous } from '../layout/layout';
import { cachedSource } from '../../runtime/source-cache';
import { cachedTexture, layerTexels, layoutTexels, packedLayout, stripLayout, uploadMatrix, type PackedLayout } from '../matmul/packed-texture';
import { acquireTexture, elementsPerTexel, flatCapacity, releaseTexture, type FlatTexture, type TexelFormat } from '../../runtime/texture-pool';
import { frozenWeight, type MatrixView } from '../matmul/problem';
import { bindingBudget } from '../matmul/split';
import { B_ROW_STEP, stripTexels, tileCode, type TextureTile } from '../matmul/texture-gemm.wgsl';
import type { GroupedGemm } from './moe-gemm.wgsl';
import { NO_ROW } from './moe-grouping.wgsl';

const LANES = 8;

/**
 * Records `g` with the texture tile; false (nothing recorded) when a texture or the output binding
 * would not fit, for the caller to fall back to the storage-buffer kernel.
 */
export function textureGroupedGemm(device: WebGpuDevice, g: GroupedGemm): boolean {
  const [experts, n, k] = g.weight.shape as [number, number, number];
  const format: TexelFormat = g.weight.dtype === 'bf16' ? 'rgba32uint' : 'rgba32float';
  const tile: TextureTile = { rows: g.grouping.rowTile, texelsPerLane: 32 / elementsPerTexel(format), kStep: 8, storage: true, vecStores: false };
  // W[e] read as B [K, N]: K contiguous, columns K apart.
  const wView: MatrixView = { tensor: g.weight, offset: g.weight.offset, batchStride: n * k, rowStride: 1, colStride: k };
  const wLayout = stripLayout(device, wView, format, experts, k, n, B_ROW_STEP, stripTexels(format));
  const aView: MatrixView = { tensor: g.a, offset: g.a.offset + g.aFirst, batchStride: 0, rowStride: k, colStride: 1 };
  const aLayout = packedLayout(device, aView, 'rgba32float', 1, g.aRows, k, 1, tile.kStep / 4);
  const capacity = flatCapacity(device);
  if (!wLayout || layoutTexels(wLayout) > capacity || layoutTexels(aLayout) > capacity || aLayout.panelTexels < aLayout.rowTexels) return false;
  if (g.grouping.rowCapacity * n * 4 > bindingBudget(device)) return false;

  const transient: FlatTexture[] = [];
  const upload = (view: MatrixView, layout: PackedLayout): FlatTexture => {
    const texture = acquireTexture(device, layout.format, layoutTexels(layout));
    uploadMatrix(device, view, layout, texture);
    transient.push(texture);
    return texture;
  };
  const w = (frozenWeight(g.weight) ? cachedTexture(device, wView, wLayout)?.texture : null) ?? upload(wView, wLayout);
  const a = upload(aView, aLayout);

  const stripWidth = stripTexels(format);
  const strips = Math.ceil(wLayout.rowTexels / stripWidth);
  const p = new Params()
    .u32('experts', experts)
    .u32('n', n)
    .u32('slots', g.gather?.slots ?? 1)
    .u32('kPad', wLayout.paddedRows)
    .u32('aRow', aLayout.rowTexels)
    .u32('aMask', a.width - 1)
    .u32('aShift', a.shift)
    .u32('bLayer', layerTexels(wLayout))
    .u32('bStrip', stripWidth * wLayout.paddedRows)
    .u32('bRow', stripWidth)
    .u32('bRowLast', wLayout.rowTexels - (strips - 1) * stripWidth)
    .u32('lastStrip', strips - 1)
    .u32('bMask', w.width - 1)
    .u32('bShift', w.shift);
  // Gathering, the bias and relu² are uniform flags, so the up and down GEMMs share one shader per
  // weight dtype (each variant takes llvmpipe seconds to compile). The bias is bound as f32 [E, N],
  // or a one-element placeholder.
  const bias = g.bias ? noGrad(() => (g.bias!.dtype === 'f32' ? contiguous(g.bias!) : cast(g.bias!, 'f32'))) : empty([1], { device });
  p.u32('gather', g.gather ? 1 : 0)
    .u32('relu2', g.relu2 ? 1 : 0)
    .u32('hasBias', g.bias ? 1 : 0);
  const bound = bindTensors(
    device,
    g.name,
    [
      { name: 'starts', tensor: g.grouping.segmentStarts, what: `${g.name} segment starts` },
      { name: 'row_pairs', tensor: g.grouping.rowPairs, what: `${g.name} row pairs` },
      { name: 'A', texture: a.view, type: 'texture_storage_2d<rgba32float, read>' },
      { name: 'B', texture: w.view, type: `texture_storage_2d<${format}, read>` },
      { name: 'bias', tensor: bias, window: { start: 0, length: g.bias ? experts * n : 1 }, what: `${g.name} bias` },
      { name: 'out', tensor: g.out, window: { start: 0, length: g.grouping.rowCapacity * n }, what: `${g.name} output`, writable: true },
    ],
    p,
  );
  device.run({
    name: g.name,
    source: cachedSource(`moe-texture|${p.wgsl()}|${bound.decls}|${JSON.stringify(tile)}|${format}`, () => source(p, bound.decls, tile, format)),
    params: p,
    bindings: bound.ranges,
    workgroups: [strips, Math.ceil(g.grouping.rowCapacity / tile.rows), 1],
    detail: `${experts} experts [${n},${k}] ${g.a.dtype}·${g.weight.dtype} texture tile ${tile.rows}×32`,
  });
  for (const t of transient) releaseTexture(device, t);
  bias.dispose();
  return true;
}

function source(p: Params, decls: string, tile: TextureTile, format: TexelFormat): string {
  const rows = [...Array(tile.rows).keys()];
  const code = tileCode(tile, format, (r) => `aStart${r}`);
  const vecs = [...Array(code.groups).keys()];
  // Row r's first A texel: its token's row when gathered (a padding row reads row 0 and stores zeros).
  const rowSetup = rows.map(
    (r) =>
      `let pair${r} = select(0u, row_pairs[row0 + ${r}u], P.gather != 0u); let valid${r} = P.gather == 0u || pair${r} != ${NO_ROW}u; let aStart${r} = select(row0 + ${r}u, select(0u, pair${r} / P.slots, valid${r}), P.gather != 0u) * aRow;`,
  );
  const biases = vecs.map(
    (v) =>
      `let bias${v} = select(vec4<f32>(0.0), vec4<f32>(${[0, 1, 2, 3].map((e) => `bias[P.biasOff + min(e * P.n + col${v} + ${e}u, last)]`).join(', ')}), P.hasBias != 0u);`,
  );
  const store = rows.map(
    (r) => `{
    let o = P.outOff + (row0 + ${r}u) * P.n;
    ${vecs.map((v) => `put(o, col${v}, finish(c${r}_${v} + bias${v}, valid${r}));`).join('\n    ')}
  }`,
  );
  return `requires readonly_and_readwrite_storage_textures;
${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
fn put(o: u32, c: u32, v: vec4<f32>) {
  if (c < P.n) { out[o + c] = v.x; }
  if (c + 1u < P.n) { out[o + c + 1u] = v.y; }
  if (c + 2u < P.n) { out[o + c + 2u] = v.z; }
  if (c + 3u < P.n) { out[o + c + 3u] = v.w; }
}
${code.helpers}
${NAN_SAFE_F32}
// relu² when asked; a padding row of a gathered operand stores zeros.
fn finish(v: vec4<f32>, valid: bool) -> vec4<f32> {
  let r = relu_nan_v4(v);
  return select(vec4<f32>(0.0), select(v, r * r, P.relu2 != 0u), valid);
}
// The expert whose segment holds row: the last e with starts[e] <= row (empty segments share their start with the next one).
fn expert_of(row: u32) -> u32 {
  var lo = 0u;
  var hi = P.experts;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (starts[mid] <= row) { lo = mid; } else { hi = mid; }
  }
  return lo;
}
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let row0 = starts[0] + wg.y * ${tile.rows}u;
  if (row0 >= starts[P.experts]) { return; }
  let e = expert_of(row0);
  let t0 = wg.x * ${LANES * tile.texelsPerLane}u + lane;
  let aRow = P.aRow;
  let bRow = select(P.bRow, P.bRowLast, wg.x == P.lastStrip);
  let aMask = P.aMask;
  let aShift = P.aShift;
  let bMask = P.bMask;
  let bShift = P.bShift;
  let kPad = P.kPad;
  let bCol0 = e * P.bLayer + wg.x * P.bStrip + lane;
  ${rowSetup.join('\n  ')}
  ${code.accumulators}
  ${code.loop}
  ${code.columns}
  // Bias columns past N read the expert's last one and are not stored; the placeholder has one element.
  let last = select(0u, (e + 1u) * P.n - 1u, P.hasBias != 0u);
  ${biases.join('\n  ')}
  ${store.join('\n  ')}
}`;
}
