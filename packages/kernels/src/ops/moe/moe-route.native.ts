/** Native MoE routing and its backward (packages/kernels/native/moe.c), same contract as the CPU reference. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { MoeRouteOptions } from './moe-route';

/** f32 / bf16 code, or null for a dtype the kernel does not read. */
function floatCode(t: Tensor): number | null {
  const code = nativeDTypeCode(t.dtype);
  return code === 0 || code === 1 ? code : null;
}

/** Same contract as moeRouteCpu; false when a dtype is not supported. */
export function moeRouteNative(lib: NativeKernels, logits: Tensor, bias: Tensor | null, o: MoeRouteOptions, weights: Tensor, indices: Tensor): boolean {
  const logitsCode = floatCode(logits);
  const biasCode = bias ? floatCode(bias) : 0;
  if (logitsCode === null || biasCode === null) return false;
  const [tokens, experts] = logits.shape as [number, number];
  const params = new Float64Array([
    tokens,
    experts,
    o.topK,
    o.nGroup,
    o.topkGroup,
    o.normTopkProb ? 1 : 0,
    o.routedScalingFactor,
    logitsCode,
    logits.offset,
    bias ? 1 : 0,
    biasCode,
    bias?.offset ?? 0,
    weights.offset,
    indices.offset,
  ]);
  const rc = lib.symbols.nt_moe_route(params, logits.storage.cpu, bias?.storage.cpu ?? null, weights.storage.cpu, indices.storage.cpu);
  if (rc !== 0)
    throw new Error(`moeRoute (native): fewer than ${o.topK} candidates for some token (E=${experts}, nGroup=${o.nGroup}, topkGroup=${o.topkGroup})`);
  return true;
}

/** Same contract as moeRouteBackwardCpu (gradWeights contiguous f32); false when a dtype is not supported. */
export function moeRouteBackwardNative(lib: NativeKernels, logits: Tensor, indices: Tensor, gradWeights: Tensor, o: MoeRouteOptions, out: Tensor): boolean {
  const logitsCode = floatCode(logits);
  if (logitsCode === null || gradWeights.dtype !== 'f32') return false;
  const [tokens, experts] = logits.shape as [number, number];
  const params = new Float64Array([
    tokens,
    experts,
    o.topK,
    o.normTopkProb ? 1 : 0,
    o.routedScalingFactor,
    logitsCode,
    logits.offset,
    indices.offset,
    gradWeights.offset,
    out.offset,
  ]);
  const rc = lib.symbols.nt_moe_route_backward(params, logits.storage.cpu, indices.storage.cpu, gradWeights.storage.cpu, out.storage.cpu);
  if (rc !== 0) throw new Error(`moeRoute backward (native): topK=${o.topK} is above the kernel's limit`);
  return true;
}
