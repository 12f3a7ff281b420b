/**
 * Tensor lifetimes. Every tensor holds GPU (or CPU) memory until `dispose()`; `tidy(fn)` disposes
 * every tensor created inside `fn` except the ones it returns (which move to the enclosing scope)
 * and the ones passed to `keep()`. Tensors created outside any scope are the caller's to dispose.
 */

export interface Disposable {
  dispose(): void;
  readonly isDisposed: boolean;
}

const scopes: Set<Disposable>[] = [];

/** Registers a new tensor with the innermost scope (called by the Tensor constructor). */
export function trackTensor(t: Disposable): void {
  scopes[scopes.length - 1]?.add(t);
}

/** Removes `t` from every open scope so `tidy` will not dispose it. Returns `t`. */
export function keep<T extends Disposable>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Disposable>, depth = 0): void {
  if (value === null || value === undefined || depth > 4) return;
  if (typeof value !== 'object') return;
  if ('dispose' in value && 'isDisposed' in value) {
    out.add(value as Disposable);
    return;
  }
  if (Array.isArray(value)) {
    for (const v of value) collect(v, out, depth + 1);
    return;
  }
  if (value instanceof Map) {
    for (const v of value.values()) collect(v, out, depth + 1);
    return;
  }
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return;
  // Plain objects and class instances alike (e.g. a model's output object holding its tensors).
  for (const v of Object.values(value)) collect(v, out, depth + 1);
}

/**
 * Runs `fn` and disposes every tensor it created except those reachable from its result (tensors,
 * arrays, maps, and objects — plain or class instances — of tensors). Synchronous only: an async function would let other
 * work's tensors land in this scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    for (const t of scope) t.dispose();
    throw new Error('tidy() takes a synchronous function; dispose tensors of async code explicitly');
  }
  const kept = new Set<Disposable>();
  collect(result, kept);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (kept.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

/** Disposes every tensor in a value (tensor, array, map or plain object of tensors). */
export function dispose(value: unknown): void {
  const all = new Set<Disposable>();
  collect(value, all);
  for (const t of all) t.dispose();
}
