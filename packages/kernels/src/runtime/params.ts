/**
 * Kernel parameters: a uniform struct per dispatch, described and packed by one builder so the WGSL
 * declaration and the bytes can never disagree.
 *
 *   const p = new Params().u32('rows', r).f32('eps', 1e-5).u32Array('shape', dims, 8);
 *   p.wgsl()   // "struct Params { rows: u32, eps: f32, _pad0: u32, _pad1: u32, shape: array<vec4<u32>, 2>, }"
 *   p.bytes()  // the matching little-endian words
 *
 * Arrays are `array<vec4<u32>, n>` (16-byte stride, as uniform layout requires); read element i
 * in WGSL with `P.shape[i / 4u][i % 4u]`.
 */

type Scalar = 'u32' | 'i32' | 'f32';

interface Field {
  name: string;
  type: Scalar | 'u32array';
  values: number[];
}

export class Params {
  private readonly fields: Field[] = [];

  u32(name: string, value: number): this {
    if (!Number.isInteger(value) || value < 0 || value > 0xffffffff) throw new Error(`param ${name}: ${value} is not a u32`);
    this.fields.push({ name, type: 'u32', values: [value] });
    return this;
  }

  i32(name: string, value: number): this {
    if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) throw new Error(`param ${name}: ${value} is not an i32`);
    this.fields.push({ name, type: 'i32', values: [value] });
    return this;
  }

  f32(name: string, value: number): this {
    this.fields.push({ name, type: 'f32', values: [value] });
    return this;
  }

  /** A u32 array of fixed `capacity` (padded with zeros), e.g. shapes and strides up to rank 8. */
  u32Array(name: string, values: readonly number[], capacity: number): this {
    if (values.length > capacity) throw new Error(`param ${name}: ${values.length} values exceed capacity ${capacity}`);
    for (const v of values) if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new Error(`param ${name}: ${v} is not a u32`);
    const padded = [...values];
    const cap = Math.ceil(capacity / 4) * 4;
    while (padded.length < cap) padded.push(0);
    this.fields.push({ name, type: 'u32array', values: padded });
    return this;
  }

  private layout(): { decl: string[]; words: { type: Scalar; value: number }[] } {
    const decl: string[] = [];
    const words: { type: Scalar; value: number }[] = [];
    let pad = 0;
    for (const f of this.fields) {
      if (f.type === 'u32array') {
        while (words.length % 4 !== 0) {
          decl.push(`_pad${pad++}: u32`);
          words.push({ type: 'u32', value: 0 });
        }
        decl.push(`${f.name}: array<vec4<u32>, ${f.values.length / 4}>`);
        for (const v of f.values) words.push({ type: 'u32', value: v });
      } else {
        decl.push(`${f.name}: ${f.type}`);
        words.push({ type: f.type, value: f.values[0]! });
      }
    }
    if (words.length === 0) {
      decl.push(`_pad${pad++}: u32`);
      words.push({ type: 'u32', value: 0 });
    }
    while (words.length % 4 !== 0) {
      decl.push(`_pad${pad++}: u32`);
      words.push({ type: 'u32', value: 0 });
    }
    return { decl, words };
  }

  /** The WGSL struct declaration for these fields. */
  wgsl(structName = 'Params'): string {
    return `struct ${structName} { ${this.layout().decl.join(', ')}, }`;
  }

  /** The packed bytes (a multiple of 16). */
  bytes(): Uint8Array {
    const { words } = this.layout();
    const buf = new ArrayBuffer(words.length * 4);
    const view = new DataView(buf);
    words.forEach((w, i) => {
      if (w.type === 'f32') view.setFloat32(i * 4, w.value, true);
      else if (w.type === 'i32') view.setInt32(i * 4, w.value, true);
      else view.setUint32(i * 4, w.value >>> 0, true);
    });
    return new Uint8Array(buf);
  }
}
