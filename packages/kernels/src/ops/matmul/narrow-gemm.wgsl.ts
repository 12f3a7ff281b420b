/**
 * The texture matmul for narrow products (N ≤ 32, M > 8: the Mamba dt projection, MoE routers) on
 * software rasterizers. The prefill tile gives each workgroup a 256-column strip of B, so a narrow
 * B leaves almost all of its work unused (a 512×16×512 product cost as much as 512×256×512). Here
 * lanes take rows instead: each invocation owns `ROWS` rows × every column (the B row is loaded
 * by all lanes alike), and reads the same packed operands as the tile kernel (A rows in whole
 * 8-wide K steps, B rows `[paddedRows][w]` per layer: one strip, or one panel of a dense copy).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import type { Tensor } from '../../tensor';
import { layerTexels, panelCount, type PackedLayout } from './packed-texture';
import { elementsPerTexel, type TexelFormat } from '../../runtime/texture-pool';
import type { MatmulProblem } from './problem';
import { cachedSource } from '../../runtime/source-cache';
import { bindingBudget } from './split';
import type { PackedOperand } from './texture-gemm.wgsl';

/** Widest N this kernel takes. */
export const NARROW_MAX_COLS = 32;
const LANES = 8;
/** Rows per invocation. */
const ROWS = 4;
const K_STEP = 8;

/** Whether `p` with these packed operands can run the narrow kernel. */
export function narrowApplies(p: MatmulProblem, a: PackedLayout, b: PackedLayout): boolean {
  return p.n <= NARROW_MAX_COLS && panelCount(b) === 1 && b.paddedRows % K_STEP === 0 && a.rowTexels % (K_STEP / 4) === 0;
}

/** Runs `p` into the dense f32 `out` [batch, M, N]; bias as for the tile kernel. */
export function narrowMatmul(
  device: WebGpuDevice,
  p: MatmulProblem,
  out: Tensor,
  a: PackedOperand,
  b: PackedOperand,
  bias: { tensor: Tensor; present: boolean },
): void {
  const maxWg = device.limits.maxComputeWorkgroupsPerDimension;
  const layerElements = p.m * p.n;
  const rowsPerGroup = LANES * ROWS;
  // Output chunks (batch entries, then rows) whose binding fits.
  const limit = Math.floor(bindingBudget(device) / 4);
  let zChunk = Math.min(p.batch, maxWg, Math.max(1, Math.floor(limit / Math.max(layerElements, 1))));
  let mChunk = p.m;
  if (zChunk === 1 && layerElements > limit) mChunk = Math.max(1, Math.floor(limit / p.n));
  mChunk = Math.min(mChunk, maxWg * rowsPerGroup);
  if (mChunk < p.m) zChunk = 1;
  // B texels loaded per K row: a power of two covering the row (the rest feed columns never stored).
  const texels = 2 ** Math.ceil(Math.log2(b.layout.rowTexels));
  const aLayerTexels = a.layout.layers > 1 ? layerTexels(a.layout) : 0;
  const bLayerTexels = b.layout.layers > 1 ? layerTexels(b.layout) : 0;
  for (let z0 = 0; z0 < p.batch; z0 += zChunk) {
    const zc = Math.min(zChunk, p.batch - z0);
    for (let m0 = 0; m0 < p.m; m0 += mChunk) {
      const mc = Math.min(mChunk, p.m - m0);
      const params = new Params()
        .u32('m', mc)
        .u32('kPad', b.layout.paddedRows)
        .u32('nCols', p.n)
        .u32('aBase', z0 * aLayerTexels + m0 * a.layout.rowTexels)
        .u32('aLayer', aLayerTexels)
        .u32('aRow', a.layout.rowTexels)
        .u32('aMask', a.texture.width - 1)
        .u32('aShift', a.texture.shift)
        .u32('bBase', z0 * bLayerTexels)
        .u32('bLayer', bLayerTexels)
        .u32('bRow', b.layout.rowTexels)
        .u32('bMask', b.texture.width - 1)
        .u32('bShift', b.texture.shift)
        .u32('outLayer', layerElements)
        .u32('outRow', p.n)
        .u32('hasBias', bias.present ? 1 : 0);
      const format = b.layout.format;
      const bound = bindTensors(
        device,
        'matmul',
        [
          { name: 'A', texture: a.texture.view, type: 'texture_storage_2d<rgba32float, read>' },
          { name: 'B', texture: b.texture.view, type: `texture_storage_2d<${format}, read>` },
          bias.present
            ? { name: 'bias', tensor: bias.tensor, window: { start: 0, length: p.n }, what: 'matmul bias' }
            : { name: 'bias', tensor: bias.tensor, window: { start: 0, length: 1 }, what: 'matmul bias placeholder' },
          {
            name: 'out',
            tensor: out,
            window: { start: z0 * layerElements + m0 * p.n, length: (zc - 1) * layerElements + mc * p.n },
            what: 'matmul output',
            writable: true,
          },
        ],
        params,
      );
      device.run({
        name: 'matmul_narrow',
        source: cachedSource(`narrow|${params.wgsl()}|${bound.decls}|${texels}`, () => narrowSource(params, bound.decls, texels, format)),
        params,
        bindings: bound.ranges,
        workgroups: [Math.ceil(mc / rowsPerGroup), 1, zc],
        detail: `[${zc}×${mc}×${p.k}]·[${p.k}×${p.n}] ${ROWS} rows × ${texels * elementsPerTexel(format)} columns per lane, ${format}`,
      });
    }
  }
}

function narrowSource(p: Params, decls: string, texels: number, bFormat: TexelFormat): string {
  const packed = bFormat === 'rgba32uint';
  const perTexel = packed ? 2 : 1; // vec4 column groups per B texel
  const rows = [...Array(ROWS).keys()];
  const vecs = [...Array(texels * perTexel).keys()];
  const steps = [...Array(K_STEP).keys()];
  const loadB = steps.flatMap((kk) =>
    [...Array(texels).keys()].flatMap((t) => {
      const fetch = `textureLoad(B, at(bRow0 + (k + ${kk}u) * bRow + ${t}u, bMask, bShift))`;
      if (!packed) return [`let b${kk}_${t} = ${fetch};`];
      return [
        `let w${kk}_${t} = ${fetch};`,
        `let b${kk}_${2 * t} = vec4<f32>(lo(w${kk}_${t}.x), hi(w${kk}_${t}.x), lo(w${kk}_${t}.y), hi(w${kk}_${t}.y));`,
        `let b${kk}_${2 * t + 1} = vec4<f32>(lo(w${kk}_${t}.z), hi(w${kk}_${t}.z), lo(w${kk}_${t}.w), hi(w${kk}_${t}.w));`,
      ];
    }),
  );
  const fma = rows.flatMap((r) => [
    `{ let a0 = textureLoad(A, at(aRow0 + ${r * LANES}u * aRow + q, aMask, aShift)); let a1 = textureLoad(A, at(aRow0 + ${r * LANES}u * aRow + q + 1u, aMask, aShift));`,
    ...vecs.map((v) => {
      const terms = steps.map((kk) => `a${kk >> 2}.${'xyzw'[kk & 3]} * b${kk}_${v}`);
      return `  c${r}_${v} = c${r}_${v} + ${terms.join(' + ')};`;
    }),
    '}',
  ]);
  const store = rows.map((r) => {
    const cols = vecs.flatMap((v) =>
      [0, 1, 2, 3].map((e) => `if (${4 * v + e}u < nCols) { out[o + ${4 * v + e}u] = c${r}_${v}.${'xyzw'[e]} + bias_at(${4 * v + e}u); }`),
    );
    return `if (m0 + ${r * LANES}u < P.m) {
    let o = outBase + (m0 + ${r * LANES}u) * P.outRow;
    ${cols.join('\n    ')}
  }`;
  });
  return `requires readonly_and_readwrite_storage_textures;
${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
fn at(i: u32, mask: u32, shift: u32) -> vec2<u32> { return vec2<u32>(i & mask, i >> shift); }
fn bias_at(c: u32) -> f32 {
  if (P.hasBias == 0u) { return 0.0; }
  return bias[P.biasOff + c];
}
${packed ? 'fn lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }\nfn hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }' : ''}
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let z = wg.z;
  // Lane l owns rows m0, m0 + ${LANES}, ...: adjacent lanes read adjacent rows of A.
  let m0 = wg.x * ${LANES * ROWS}u + lane;
  let aRow = P.aRow;
  let bRow = P.bRow;
  let aMask = P.aMask;
  let aShift = P.aShift;
  let bMask = P.bMask;
  let bShift = P.bShift;
  let kPad = P.kPad;
  let aRow0 = P.aBase + z * P.aLayer + m0 * aRow;
  let bRow0 = P.bBase + z * P.bLayer;
  ${rows.flatMap((r) => vecs.map((v) => `var c${r}_${v} = vec4<f32>(0.0);`)).join(' ')}
  for (var k = 0u; k < kPad; k = k + ${K_STEP}u) {
    let q = k >> 2u;
    ${loadB.join('\n    ')}
    ${fma.join('\n    ')}
  }
  let outBase = P.outOff + z * P.outLayer;
  let nCols = P.nCols;
  ${store.join('\n  ')}
}`;
}
