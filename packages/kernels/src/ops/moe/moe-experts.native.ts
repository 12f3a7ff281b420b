/** Native grouped MoE experts and their backward (packages/kernels/native/moe.c), same contract as the CPU reference. */
import { hostBuffer as buf, type ExpertInputs, type NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import { cpuView, type Tensor } from '../../tensor';
import type { MoeExpertGrads, MoeExpertOperands } from './moe-experts';

/** f32 / bf16 code, or null for a dtype the kernel does not read. */
function floatCode(t: Tensor | null): number | null {
  if (!t) return 0;
  const code = nativeDTypeCode(t.dtype);
  return code === 0 || code === 1 ? code : null;
}

/** The kernel's operand parameters (see read_operands in moe.c), or null when a dtype is not supported. */
function operandParams(o: MoeExpertOperands, gradOrOutOffset: number): Float64Array | null {
  const codes = [o.x, o.weights, o.upProj, o.downProj, o.upBias, o.downBias].map(floatCode);
  if (codes.some((c) => c === null)) return null;
  const [x, weights, up, down, upBias, downBias] = codes as number[];
  const [tokens, hin] = o.x.shape as [number, number];
  const [experts, inter] = o.upProj.shape as [number, number];
  return new Float64Array([
    tokens,
    hin,
    o.indices.shape[1]!,
    experts,
    inter,
    o.downProj.shape[1]!,
    x!,
    o.x.offset,
    o.indices.offset,
    weights!,
    o.weights.offset,
    up!,
    o.upProj.offset,
    down!,
    o.downProj.offset,
    o.upBias ? 1 : 0,
    upBias!,
    o.upBias?.offset ?? 0,
    o.downBias ? 1 : 0,
    downBias!,
    o.downBias?.offset ?? 0,
    gradOrOutOffset,
  ]);
}

function check(rc: number, o: MoeExpertOperands, what: string): void {
  if (rc === 0) return;
  if (rc < 0) throw new Error(`${what}: native kernel failed (out of memory?) for ${o.x.shape[0]} tokens`);
  const pair = rc - 1;
  const slots = o.indices.shape[1]!;
  const t = Math.floor(pair / slots);
  const s = pair % slots;
  const e = (cpuView(o.indices) as Int32Array)[o.indices.offset + pair];
  throw new Error(`${what}: token ${t} slot ${s} routes to expert ${e}, outside [0, ${o.upProj.shape[0]})`);
}

/** The experts' input buffers in nt_moe_experts*'s argument order: x, indices, weights, up, down, up bias, down bias. */
const expertInputs = (o: MoeExpertOperands): ExpertInputs => [
  buf(o.x),
  buf(o.indices),
  buf(o.weights),
  buf(o.upProj),
  buf(o.downProj),
  buf(o.upBias),
  buf(o.downBias),
];

/** Same contract as moeExpertsCpu; false when a dtype is not supported. */
export function moeExpertsNative(lib: NativeKernels, o: MoeExpertOperands, out: Tensor): boolean {
  const params = operandParams(o, out.offset);
  if (!params) return false;
  const rc = lib.symbols.nt_moe_experts(params, ...expertInputs(o), buf(out));
  check(rc, o, 'moeExperts');
  return true;
}

/** Same contract as moeExpertsBackwardCpu (`grad` contiguous f32); false when it does not apply (a dtype, or an output not from offset 0). */
export function moeExpertsBackwardNative(lib: NativeKernels, o: MoeExpertOperands, grad: Tensor, out: MoeExpertGrads): boolean {
  const outputs = [out.x, out.weights, out.upProj, out.downProj, out.upBias, out.downBias];
  if (grad.dtype !== 'f32' || outputs.some((t) => t && (t.offset !== 0 || t.dtype !== 'f32'))) return false;
  const params = operandParams(o, grad.offset);
  if (!params) return false;
  const rc = lib.symbols.nt_moe_experts_backward(
    params,
    ...expertInputs(o),
    buf(grad),
    buf(out.x),
    buf(out.weights),
    buf(out.upProj),
    buf(out.downProj),
    buf(out.upBias),
    buf(out.downBias),
  );
  check(rc, o, 'moeExperts backward');
  return true;
}
