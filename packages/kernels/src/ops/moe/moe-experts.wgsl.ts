/**
 * Grouped expert execution on the GPU, all recorded without a readback: group the pairs by expert,
 * up-project each segment (+bias, relu²) into grouped hidden rows, down-project them (+bias), then
 * combine each token's k rows with its routing weights — a gather per token in slot order, so the
 * sum is deterministic (no float atomics). Tokens go through in passes sized so every
 * intermediate fits one storage binding.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { BindingTooLargeError, bindTensors } from '../../runtime/bindings';
import { bytesPerElement } from '../../dtype';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MoeExpertOperands } from './moe-experts';
import { bindingBudget, expertsPerBinding, groupedGemm } from './moe-gemm.wgsl';
import { NO_ROW, disposeGrouping, groupByExpert, groupingBindingBytes, rowCapacity, rowTileFor, type ExpertGrouping } from './moe-grouping.wgsl';

const WG = 64;
/** Output columns per combine invocation. */
const COMBINE_COLS = 4;

export function moeExpertsGpu(device: WebGpuDevice, o: MoeExpertOperands, out: Tensor): void {
  const [tokens, hin] = o.x.shape as [number, number];
  const slots = o.indices.shape[1]!;
  const [experts, inter] = o.upProj.shape as [number, number];
  const hout = o.downProj.shape[1]!;
  const perPass = tokensPerPass(device, tokens, slots, experts, hin * bytesPerElement(o.x.dtype), inter, hout);
  // Checked before anything is recorded, so a failure leaves no half-built pass behind.
  expertsPerBinding(device, o.upProj, 'moe_up');
  expertsPerBinding(device, o.downProj, 'moe_down');
  for (let t0 = 0; t0 < tokens; t0 += perPass) {
    const count = Math.min(perPass, tokens - t0);
    const grouping = groupByExpert(device, o.indices, t0 * slots, count * slots, experts);
    const hidden = empty([grouping.rowCapacity, inter], { device });
    groupedGemm(device, {
      name: 'moe_up',
      grouping,
      a: o.x,
      aFirst: t0 * hin,
      aRows: count,
      gather: { slots },
      weight: o.upProj,
      bias: o.upBias,
      relu2: true,
      out: hidden,
    });
    const rows = empty([grouping.rowCapacity, hout], { device });
    groupedGemm(device, {
      name: 'moe_down',
      grouping,
      a: hidden,
      aFirst: 0,
      aRows: grouping.rowCapacity,
      gather: null,
      weight: o.downProj,
      bias: o.downBias,
      relu2: false,
      out: rows,
    });
    combine(device, grouping, rows, o.weights, t0, count, slots, hout, out);
    hidden.dispose();
    rows.dispose();
    disposeGrouping(grouping);
  }
}

/**
 * The most tokens one pass may take so that every binding (inputs, grouped activations, grouping
 * tables) stays within maxStorageBufferBindingSize and the GEMM grid within the workgroup limit.
 */
export function tokensPerPass(device: WebGpuDevice, tokens: number, slots: number, experts: number, xRowBytes: number, inter: number, hout: number): number {
  const budget = bindingBudget(device);
  const fits = (t: number): boolean => {
    const pairs = t * slots;
    const tile = rowTileFor(pairs, experts);
    const capacity = rowCapacity(pairs, experts, tile);
    return (
      capacity * Math.max(inter, hout) * 4 <= budget &&
      capacity <= device.limits.maxComputeWorkgroupsPerDimension * tile &&
      t * xRowBytes <= budget &&
      t * hout * 4 <= budget &&
      pairs * 4 <= budget &&
      groupingBindingBytes(pairs, experts) <= budget
    );
  };
  if (!fits(1)) {
    throw new BindingTooLargeError(
      `moeExperts: one token's grouped activations (k=${slots}, I=${inter}, Hout=${hout}, E=${experts}) exceed maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
    );
  }
  let lo = 1;
  let hi = tokens;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * out[t, n] = Σ_s weights[t, s] · rows[pairRows[t·k + s], n], summed in slot order; NaN for an
 * out-of-range expert index. Each invocation takes COMBINE_COLS columns of one token, so the
 * token's row indices and weights are loaded once for all of them.
 */
function combine(
  device: WebGpuDevice,
  g: ExpertGrouping,
  rows: Tensor,
  weights: Tensor,
  t0: number,
  count: number,
  slots: number,
  hout: number,
  out: Tensor,
): void {
  const groups = Math.ceil(hout / COMBINE_COLS);
  const p = new Params()
    .u32('tokens', count)
    .u32('n', hout)
    .u32('groups', groups)
    // NaN cannot be a WGSL constant; it comes in as bits.
    .u32('nanBits', 0x7fc00000);
  const bound = bindTensors(
    device,
    'moeExperts',
    [
      { name: 'pair_rows', tensor: g.pairRows, what: 'moeExperts pair rows' },
      { name: 'rows', tensor: rows, window: { start: 0, length: g.rowCapacity * hout }, what: 'moeExperts expert outputs' },
      { name: 'weights', tensor: weights, window: { start: t0 * slots, length: count * slots }, what: 'moeExperts weights' },
      { name: 'out', tensor: out, window: { start: t0 * hout, length: count * hout }, what: 'moeExperts output', writable: true },
    ],
    p,
  );
  const cols = Array.from({ length: COMBINE_COLS }, (_, c) => c);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.tokens * P.groups) { return; }
  let t = i / P.groups;
  let col0 = (i % P.groups) * ${COMBINE_COLS}u;
  // Columns past the end read the row's last column and are not stored.
  ${cols.map((c) => `let c${c} = min(col0 + ${c}u, P.n - 1u);`).join('\n  ')}
  ${cols.map((c) => `var acc${c} = 0.0;`).join('\n  ')}
  for (var s = 0u; s < ${slots}u; s++) {
    let r = pair_rows[t * ${slots}u + s];
    if (r == ${NO_ROW}u) {
      ${cols.map((c) => `acc${c} = bitcast<f32>(P.nanBits);`).join(' ')}
      break;
    }
    let ws = load_weights(P.weightsOff + t * ${slots}u + s);
    let base = P.rowsOff + r * P.n;
    ${cols.map((c) => `acc${c} += ws * rows[base + c${c}];`).join('\n    ')}
  }
  let o = P.outOff + t * P.n;
  ${cols.map((c) => (c === 0 ? `out[o + c0] = acc0;` : `if (col0 + ${c}u < P.n) { out[o + c${c}] = acc${c}; }`)).join('\n  ')}
}`;
  device.run({
    name: 'moe_combine',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(count * groups, WG),
    detail: `[${count},${hout}] k=${slots}`,
  });
}
