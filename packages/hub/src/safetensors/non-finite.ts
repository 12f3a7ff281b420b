/**
 * Finding NaN and ±Inf in stored float bytes, by their bit patterns (an exponent of all ones), so a
 * corrupted checkpoint is caught while its bytes pass through the host on the way to the device —
 * whatever the device then does with NaN (WGSL lets shaders assume there is none). The bytes are
 * read as 32-bit words (one f32, or two bf16/f16 halves); a branch-free OR over each block says
 * whether the block holds one at all, and only then is the element looked for. About 2 GB/s on one
 * busy core (scripts/bench-load.ts).
 */
import type { StoredFloatDType } from './dtype';

/**
 * Per 32-bit word: the exponent bits of each element in it, the increment that carries an all-ones
 * exponent into the element's top bit (and no further), and those top bits.
 */
const LAYOUT: Readonly<Record<StoredFloatDType, { perWord: 1 | 2; mask: number; carry: number; top: number }>> = {
  F32: { perWord: 1, mask: 0x7f800000, carry: 0x00800000, top: 0x80000000 | 0 },
  BF16: { perWord: 2, mask: 0x7f807f80, carry: 0x00800080, top: 0x80008000 | 0 },
  F16: { perWord: 2, mask: 0x7c007c00, carry: 0x04000400, top: 0x80008000 | 0 },
};

const BLOCK_WORDS = 4096;

/** Index of the first NaN or ±Inf among the elements `bytes` holds (little-endian), or -1. */
export function firstNonFinite(bytes: Uint8Array, stored: StoredFloatDType): number {
  const { perWord, mask, carry, top } = LAYOUT[stored];
  const elementBytes = 4 / perWord;
  const n = Math.floor(bytes.byteLength / elementBytes);
  const wordCount = Math.floor(n / perWord);
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice(0, wordCount * 4);
  const words = new Int32Array(aligned.buffer, aligned.byteOffset, wordCount);
  for (let start = 0; start < wordCount; start += BLOCK_WORDS) {
    const end = Math.min(wordCount, start + BLOCK_WORDS);
    if ((orOfCarries(words, start, end, mask, carry) & top) === 0) continue;
    for (let w = start; w < end; w++) {
      const hit = (((words[w]! & mask) + carry) | 0) & top;
      if (hit === 0) continue;
      // The low half is the earlier element (little-endian).
      return perWord === 1 || (hit & 0x8000) !== 0 ? w * perWord : w * perWord + 1;
    }
  }
  if (n > wordCount * perWord) {
    // An odd 16-bit element at the end.
    const last = bytes[bytes.byteLength - 2]! | (bytes[bytes.byteLength - 1]! << 8);
    if (((last & mask & 0xffff) + (carry & 0xffff)) & 0x8000) return n - 1;
  }
  return -1;
}

/** OR of (word & mask) + carry over words[start, end), unrolled by four. */
function orOfCarries(words: Int32Array, start: number, end: number, mask: number, carry: number): number {
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  let w = start;
  for (; w + 3 < end; w += 4) {
    a |= ((words[w]! & mask) + carry) | 0;
    b |= ((words[w + 1]! & mask) + carry) | 0;
    c |= ((words[w + 2]! & mask) + carry) | 0;
    d |= ((words[w + 3]! & mask) + carry) | 0;
  }
  for (; w < end; w++) a |= ((words[w]! & mask) + carry) | 0;
  return a | b | c | d;
}
