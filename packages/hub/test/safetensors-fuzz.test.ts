/**
 * Random byte changes and truncations of a valid file, with a fixed seed: every case either opens
 * and every tensor reads back exactly the bytes its (possibly changed) header points at, or fails
 * with a CheckpointFormatError naming the file. Never a crash, a hang or an unbounded allocation.
 */
import { expect, test } from 'bun:test';
import { Generator, getCpuDevice, toBf16 } from '@nemotron-ts/kernels';
import { CheckpointFormatError, memorySource, SafetensorsReader } from '../src';
import { buildSafetensors, bytesOf } from './support/build-safetensors';
import { readRaw } from './support/reference-safetensors';

const ITERATIONS = 2000;
const NAME = 'fuzz.safetensors';
const cpu = getCpuDevice();

function validFile(g: Generator): Uint8Array {
  const f32 = Float32Array.from({ length: 37 }, () => g.normal());
  return buildSafetensors([
    { name: 'a.weight', dtype: 'F32', shape: [37], data: bytesOf(f32) },
    { name: 'b.weight', dtype: 'BF16', shape: [3, 5], data: bytesOf(toBf16(f32.subarray(0, 15))) },
    { name: 'c.half', dtype: 'F16', shape: [2, 3], data: bytesOf(Uint16Array.of(0x3c00, 0x4000, 0, 0x8001, 0x7c00, 0x3555)) },
    { name: 'd.ids', dtype: 'I32', shape: [4], data: bytesOf(Int32Array.of(1, -2, 3, 1 << 30)) },
    { name: 'e.mask', dtype: 'BOOL', shape: [3], data: Uint8Array.of(1, 0, 1) },
    { name: 'f.empty', dtype: 'F32', shape: [0, 4], data: new Uint8Array(0) },
  ]);
}

function mutate(file: Uint8Array, g: Generator): Uint8Array {
  const int = (n: number) => Math.floor(g.uniform() * n);
  const headerEnd = 8 + Number(new DataView(file.buffer).getBigUint64(0, true));
  let out = file.slice();
  const kind = int(4);
  if (kind === 2) {
    // A digit of the header changed to another digit: shapes and offsets that still parse.
    const digits = [...out.subarray(0, headerEnd).keys()].filter((i) => i >= 8 && out[i]! >= 0x30 && out[i]! <= 0x39);
    for (let n = 1 + int(2); n > 0; n--) out[digits[int(digits.length)]!] = 0x30 + int(10);
  } else if (kind !== 3) {
    // Bit flips in the header (kind 0), random bytes in the data (kind 1).
    for (let flips = 1 + int(4); flips > 0; flips--) {
      const at = kind === 0 ? int(headerEnd) : headerEnd + int(out.length - headerEnd);
      out[at] = kind === 0 ? out[at]! ^ (1 << int(8)) : int(256);
    }
  }
  if (kind === 3 || g.uniform() < 0.1) out = out.slice(0, int(out.length + 1));
  return out;
}

test(`${ITERATIONS} mutated files either load exactly or fail with a named error`, async () => {
  const g = new Generator(20240607);
  const original = validFile(g);
  const outcomes = { rejected: 0, loaded: 0, tensors: 0 };
  const started = performance.now();
  for (let i = 0; i < ITERATIONS; i++) {
    const bytes = mutate(original, g);
    let reader: SafetensorsReader;
    try {
      reader = await SafetensorsReader.open(memorySource(bytes, NAME));
    } catch (e) {
      if (!(e instanceof CheckpointFormatError) || !e.message.startsWith(`${NAME}: `)) throw new Error(`iteration ${i}: unexpected error ${String(e)}`);
      outcomes.rejected++;
      continue;
    }
    outcomes.loaded++;
    const raw = readRaw(bytes);
    expect(reader.names().sort()).toEqual([...raw.tensors.keys()].sort());
    for (const name of reader.names()) {
      const expected = raw.tensors.get(name)!;
      const stored = reader.entry(name).dtype;
      if (stored === 'F32' || stored === 'BF16' || stored === 'I32' || stored === 'U32') {
        const t = await reader.load(name, { device: cpu, chunkBytes: 24 });
        const data = await t.data();
        t.dispose();
        expect(Buffer.from(data.buffer, data.byteOffset, data.byteLength).equals(Buffer.from(expected.bytes)), `iteration ${i}, tensor ${name}`).toBe(true);
      } else {
        const host = await reader.readHost(name);
        if (stored !== 'F16') expect(Buffer.from(host.data.buffer, host.data.byteOffset, host.data.byteLength).equals(Buffer.from(expected.bytes))).toBe(true);
        else expect(host.data.length).toBe(expected.bytes.byteLength / 2);
      }
      outcomes.tensors++;
    }
  }
  // Both outcomes must occur, or the mutations test nothing.
  expect(outcomes.rejected).toBeGreaterThan(ITERATIONS / 4);
  expect(outcomes.loaded).toBeGreaterThan(ITERATIONS / 5);
  expect(performance.now() - started).toBeLessThan(60_000);
});
