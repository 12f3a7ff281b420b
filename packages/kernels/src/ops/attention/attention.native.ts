/** Native attention forward (packages/kernels/native/attention.c): the same problem as attentionCpu. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import { cpuView, type Tensor } from '../../tensor';
import type { AttentionProblem, HeadView, KeyRowView } from './attention';

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

/** Writes out (and lse) like attentionCpu; false for operand dtypes it does not read. */
export function attentionNative(lib: NativeKernels, p: AttentionProblem, out: Tensor, lse: Tensor | null): boolean {
  const [q, k, v, mask, seq] = [head(p.q), head(p.k), head(p.v), keyRow(p.keyMask), keyRow(p.seqIds)];
  if (!q || !k || !v || !mask || !seq) return false;
  // A key count read "on the device": clamped to the capacity, queries at the last valid keys.
  const keys = p.keysOnDevice ? Math.max(0, Math.min(p.keys, cpuView(p.keysOnDevice)[p.keysOnDevice.offset]!)) : p.keys;
  const queryOffset = p.keysOnDevice ? Math.max(0, keys - p.queries) : p.queryOffset;
  const params = new Float64Array([
    p.batch, p.queries, p.qHeads, p.kvHeads, p.headDim, p.valueDim, keys, p.causal ? 1 : 0, p.scale, queryOffset,
    ...q, ...k, ...v, ...mask, ...seq, lse ? 1 : 0, out.offset, lse?.offset ?? 0,
  ]);
  const rc = lib.symbols.nt_attention(params, p.q.tensor.storage.cpu, p.k.tensor.storage.cpu, p.v.tensor.storage.cpu, p.keyMask?.tensor.storage.cpu ?? null, p.seqIds?.tensor.storage.cpu ?? null, out.storage.cpu, lse?.storage.cpu ?? null);
  if (rc !== 0) throw new Error('attention: native kernel could not allocate its score buffers');
  return true;
}
