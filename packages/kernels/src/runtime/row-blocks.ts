/**
 * Row-wise kernels bind whole rows. A tensor larger than one storage binding
 * (`maxStorageBufferBindingSize`, 128 MiB on many adapters) is processed in blocks of rows, one
 * dispatch per block, each binding only its own rows of every per-row operand.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import { BindingTooLargeError, type NamedTensor } from './bindings';
import { bytesPerElement } from '../dtype';
import { formatShape } from '../shape';
import type { Tensor } from '../tensor';

/** A dense operand whose row r occupies elements [offset + r·perRow, offset + (r+1)·perRow). */
export interface RowOperand {
  tensor: Tensor;
  perRow: number;
  /** Named in errors, e.g. `softmax input`. */
  what: string;
}

export interface RowBlock {
  /** First row of the block. */
  start: number;
  /** Rows in the block. */
  count: number;
}

/** Splits `rows` into blocks small enough that every operand's rows of a block fit one binding. */
export function rowBlocks(device: WebGpuDevice, rows: number, operands: readonly RowOperand[]): RowBlock[] {
  const limit = device.limits.maxStorageBufferBindingSize;
  // `bind` starts a binding up to one alignment below the first element and pads the end to 4 bytes.
  const budget = limit - device.limits.minStorageBufferOffsetAlignment - 4;
  let perBlock = Math.max(rows, 1);
  for (const o of operands) {
    const rowBytes = o.perRow * bytesPerElement(o.tensor.dtype);
    if (rowBytes === 0) continue;
    const fit = Math.floor(budget / rowBytes);
    if (fit < 1) {
      throw new BindingTooLargeError(
        `${o.what} ${formatShape(o.tensor.shape)}: one row takes ${rowBytes} bytes, above what one binding holds (maxStorageBufferBindingSize ${limit})`,
      );
    }
    perBlock = Math.min(perBlock, fit);
  }
  const blocks: RowBlock[] = [];
  for (let start = 0; start < rows; start += perBlock) blocks.push({ start, count: Math.min(perBlock, rows - start) });
  return blocks;
}

/** The entry binding the rows of `block` of a row operand as `name` (see `bindTensors`). */
export function rowBinding(name: string, o: RowOperand, block: RowBlock, writable = false): NamedTensor {
  return { name, tensor: o.tensor, window: { start: block.start * o.perRow, length: block.count * o.perRow }, what: o.what, writable };
}
