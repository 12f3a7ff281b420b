/** Native attention forward and backward (packages/kernels/native/attention.c, attention_backward.c): the same problems as the CPU reference. */
import { empty } from '../../creation';
import { hostBuffer, type NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import { cpuView, type Tensor } from '../../tensor';
import type { AttentionBackwardProblem, AttentionGradients, AttentionProblem, HeadView, KeyRowView } from './attention';

function head(v: HeadView): number[] | null {
  const code = nativeDTypeCode(v.tensor.dtype);
  if (code === null || code === 2) return null;
  return [code, v.tensor.offset, v.strides.batch, v.strides.seq, v.strides.head];
}

function keyRow(v: KeyRowView | null): number[] | null {
  if (!v) return [0, 0, 0, 0, 0];
  const code = nativeDTypeCode(v.tensor.dtype);
  return code === null ? null : [1, code, v.tensor.offset, v.batchStride, v.keyStride];
}

/** Params slots 0–9 (attention_params.h): sizes, keys, causal, scale, the query offset. */
function problemSlots(p: AttentionProblem, keys: number, queryOffset: number): number[] {
  return [p.batch, p.queries, p.qHeads, p.kvHeads, p.headDim, p.valueDim, keys, p.causal ? 1 : 0, p.scale, queryOffset];
}

/** Params slots 10–34: q, k, v, key mask and sequence ids; null when one's dtype has no kernel. */
function operandSlots(p: AttentionProblem): number[] | null {
  const [q, k, v, mask, seq] = [head(p.q), head(p.k), head(p.v), keyRow(p.keyMask), keyRow(p.seqIds)];
  return q && k && v && mask && seq ? [...q, ...k, ...v, ...mask, ...seq] : null;
}

/** The buffers both kernels take first: q, k, v, key mask, sequence ids. */
const inputBuffers = (p: AttentionProblem) =>
  [
    hostBuffer(p.q.tensor),
    hostBuffer(p.k.tensor),
    hostBuffer(p.v.tensor),
    hostBuffer(p.keyMask?.tensor ?? null),
    hostBuffer(p.seqIds?.tensor ?? null),
  ] as const;

/** Writes out (and lse) like attentionCpu; false for operand dtypes it does not read. */
export function attentionNative(lib: NativeKernels, p: AttentionProblem, out: Tensor, lse: Tensor | null): boolean {
  const operands = operandSlots(p);
  if (!operands) return false;
  // A key count read "on the device": clamped to the capacity, queries at the last valid keys.
  const keys = p.keysOnDevice ? Math.max(0, Math.min(p.keys, cpuView(p.keysOnDevice)[p.keysOnDevice.offset]!)) : p.keys;
  const queryOffset = p.keysOnDevice ? Math.max(0, keys - p.queries) : p.queryOffset;
  const params = new Float64Array([...problemSlots(p, keys, queryOffset), ...operands, lse ? 1 : 0, out.offset, lse?.offset ?? 0]);
  const rc = lib.symbols.nt_attention(params, ...inputBuffers(p), out.storage.cpu, lse?.storage.cpu ?? null);
  if (rc !== 0) throw new Error('attention: native kernel could not allocate its score buffers');
  return true;
}

/** Gradients like attentionBackwardCpu (contiguous f32 in the shapes of q, k, v); null when it does not apply. */
export function attentionBackwardNative(lib: NativeKernels, bp: AttentionBackwardProblem, want: { q: boolean; kv: boolean }): AttentionGradients | null {
  const p = bp.forward;
  const [operands, g] = [operandSlots(p), head(bp.gradOut)];
  if (!operands || !g || bp.out.dtype !== 'f32' || bp.lse.dtype !== 'f32') return null;
  const device = p.q.tensor.device;
  const dq = want.q ? empty([p.batch, p.queries, p.qHeads, p.headDim], { device }) : null;
  const dk = want.kv ? empty([p.batch, p.keys, p.kvHeads, p.headDim], { device }) : null;
  const dv = want.kv ? empty([p.batch, p.keys, p.kvHeads, p.valueDim], { device }) : null;
  const params = new Float64Array([...problemSlots(p, p.keys, p.queryOffset), ...operands, ...g, bp.out.offset, bp.lse.offset]);
  const rc = lib.symbols.nt_attention_backward(
    params,
    ...inputBuffers(p),
    bp.gradOut.tensor.storage.cpu,
    bp.out.storage.cpu,
    bp.lse.storage.cpu,
    dq?.storage.cpu ?? null,
    dk?.storage.cpu ?? null,
    dv?.storage.cpu ?? null,
  );
  if (rc !== 0) throw new Error('attention backward: native kernel could not allocate its row buffers');
  return { q: dq, k: dk, v: dv };
}
