/**
 * Gathers: `embedding` (rows of a table by token id), `indexSelect` (slices along an axis) and
 * `gather` (PyTorch's element-wise gather). Results are f32 for float inputs (bf16 tables are
 * widened) and keep integer dtypes. Ids outside the valid range are an error when the ids are host
 * data (CPU tensors); on the GPU, where ids are never read back, such elements come out as NaN
 * (all-ones bits: -1 for i32, 0xffffffff for u32) and nothing is read out of bounds. Tables larger
 * than one storage binding are gathered in binding-sized windows.
 * Gradients flow to the table / input through deterministic scatter-adds.
 */
import { record } from '../../autograd/graph';
import { zeros } from '../../creation';
import { isFloat } from '../../dtype';
import { contiguousStrides, formatShape, normalizeAxis } from '../../shape';
import type { Tensor } from '../../tensor';
import { checkElementIndex, checkIndex } from './checks';
import { gatherRaw } from './gather-raw';
import { elementMap, takeMap } from './index-map';
import { embeddingGradNative } from './embedding-grad.native';
import { scatterIntoZeros } from './scatter';

/**
 * Rows of `table` [V, H] (f32 or bf16) for each id of `ids` (i32, any shape): f32 [...ids.shape, H].
 * An id outside [0, V) yields a NaN row on the GPU and throws on the CPU. Tables above one storage
 * binding (e.g. 131072×4096 bf16) work: the gather and its gradient run per binding-sized window.
 */
export function embedding(table: Tensor, ids: Tensor): Tensor {
  table.assertAlive('embedding table');
  if (table.rank !== 2 || !isFloat(table.dtype)) {
    throw new Error(`embedding: table must be a 2-D f32 or bf16 tensor [vocab, hidden], got ${table.dtype} ${formatShape(table.shape)}`);
  }
  checkIndex('embedding', ids, table, table.shape[0]!);
  const [vocab, hidden] = table.shape as [number, number];
  const out = gatherRaw('embedding', table, ids, takeMap(table, 0, ids), [...ids.shape, hidden]);
  record(
    'embedding',
    out,
    [table],
    (g, [savedIds]) => {
      const shape = [vocab, hidden];
      const lib = g.device.kind === 'cpu' ? g.device.native : null;
      if (lib) {
        const out = zeros(shape, { device: g.device });
        if (embeddingGradNative(lib, out, savedIds!, g)) return [out];
        out.dispose();
      }
      return [scatterIntoZeros('embedding_grad', shape, savedIds!, g, takeMap({ shape, strides: contiguousStrides(shape) }, 0, savedIds!, g.strides))];
    },
    [ids],
  );
  return out;
}

/** Slices of `x` along `axis` picked by `index` (i32 [n]): x.shape with `axis` resized to n. */
export function indexSelect(x: Tensor, axis: number, index: Tensor): Tensor {
  x.assertAlive('indexSelect input');
  const a = normalizeAxis(axis, x.rank, 'indexSelect');
  if (index.rank !== 1) throw new Error(`indexSelect: index must be 1-D, got ${formatShape(index.shape)}`);
  checkIndex('indexSelect', index, x, x.shape[a]!);
  const shape = x.shape.map((d, i) => (i === a ? index.shape[0]! : d));
  const out = gatherRaw('indexSelect', x, index, takeMap(x, a, index), shape);
  if (isFloat(x.dtype)) {
    const inShape = [...x.shape];
    record(
      'indexSelect',
      out,
      [x],
      (g, [idx]) => [
        scatterIntoZeros('indexSelect_grad', inShape, idx!, g, takeMap({ shape: inShape, strides: contiguousStrides(inShape) }, a, idx!, g.strides)),
      ],
      [index],
    );
  }
  return out;
}

/**
 * PyTorch's `gather`: out[c] = x[c with c[axis] replaced by index[c]]. `index` (i32) has the rank
 * of `x` and no dimension larger than x's outside `axis`; the result has the index's shape.
 */
export function gather(x: Tensor, axis: number, index: Tensor): Tensor {
  x.assertAlive('gather input');
  const a = normalizeAxis(axis, x.rank, 'gather');
  checkElementIndex('gather', x.shape, a, index);
  checkIndex('gather', index, x, x.shape[a]!);
  const out = gatherRaw('gather', x, index, elementMap(x, a, index), index.shape);
  if (isFloat(x.dtype)) {
    const inShape = [...x.shape];
    record(
      'gather',
      out,
      [x],
      (g, [idx]) => [
        scatterIntoZeros('gather_grad', inShape, idx!, g, elementMap({ shape: inShape, strides: contiguousStrides(inShape) }, a, idx!, g.strides)),
      ],
      [index],
    );
  }
  return out;
}
