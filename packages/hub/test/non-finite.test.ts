/** firstNonFinite: NaN and ±Inf found by bit pattern in F32, BF16 and F16 bytes, at any position and alignment. */
import { expect, test } from 'bun:test';
import { toBf16 } from '@nemotron-ts/kernels';
import { firstNonFinite } from '../src/safetensors/non-finite';

const F16_INF = 0x7c00;
const F16_NAN = 0x7e00;

function bytesOf(words: Float32Array | Uint16Array, offset: number): Uint8Array {
  // Copied to an odd offset, to exercise unaligned input.
  const out = new Uint8Array(words.byteLength + offset);
  out.set(new Uint8Array(words.buffer, words.byteOffset, words.byteLength), offset);
  return out.subarray(offset);
}

test('finds the first NaN or infinity at every position, in every float layout, aligned or not', () => {
  const n = 9001; // several blocks, an odd count
  for (const at of [0, 1, 2, 4095, 4096, 8191, 8192, 8193, n - 2, n - 1]) {
    for (const offset of [0, 1, 2]) {
      for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
        const f32 = Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 1e30);
        f32[at] = bad;
        if (at + 5 < n) f32[at + 5] = Number.NaN; // a later one is not reported
        expect(firstNonFinite(bytesOf(f32, offset), 'F32')).toBe(at);
        expect(firstNonFinite(bytesOf(toBf16(f32), offset), 'BF16')).toBe(at);
      }
      const f16 = Uint16Array.from({ length: n }, (_, i) => i % 0x7bff);
      f16[at] = at % 2 ? F16_INF | 0x8000 : F16_NAN;
      expect(firstNonFinite(bytesOf(f16, offset), 'F16')).toBe(at);
    }
  }
});

test('finite values, the largest and the subnormal included, pass', () => {
  const f32 = Float32Array.of(3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -0, 0, 1);
  expect(firstNonFinite(new Uint8Array(f32.buffer), 'F32')).toBe(-1);
  expect(firstNonFinite(new Uint8Array(toBf16(Float32Array.of(3.3e38, -1e-40, 0, 1)).buffer), 'BF16')).toBe(-1);
  expect(firstNonFinite(new Uint8Array(Uint16Array.of(0x7bff, 0xfbff, 1, 0x8001, 0).buffer), 'F16')).toBe(-1);
});
