/**
 * Orders strings by Unicode code point, which is the byte order of their UTF-8 encoding and the
 * order Python's `sorted` gives. (JS `<` compares UTF-16 units, which differs above U+FFFF.)
 */
export function compareCodePoints(a: string, b: string): number {
  const ia = a[Symbol.iterator]();
  const ib = b[Symbol.iterator]();
  for (;;) {
    const x = ia.next();
    const y = ib.next();
    if (x.done || y.done) return x.done ? (y.done ? 0 : -1) : 1;
    const d = x.value.codePointAt(0)! - y.value.codePointAt(0)!;
    if (d !== 0) return d;
  }
}
