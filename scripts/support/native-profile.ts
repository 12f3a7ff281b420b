/**
 * Time spent in each native kernel entry point (cpu:native) while a function runs: every symbol of
 * the loaded library is wrapped for the call, GEMMs keyed by their shape and dtypes, elementwise
 * calls by op code and size. Wall and process CPU ms per key; what the process spent outside native
 * calls (TypeScript ops, allocation, dispatch) is the run's total minus their sum.
 */
import type { NativeKernels } from '@nemotron-ts/kernels';

export interface NativeCallTimes {
  key: string;
  calls: number;
  ms: number;
  cpuMs: number;
}

function callKey(name: string, args: unknown[]): string {
  const p = args[0];
  if (!(p instanceof Float64Array)) return name;
  if (name === 'nt_gemm') {
    const dtype = (code: number | undefined) => (code === 1 ? 'bf16' : 'f32');
    return `gemm ${p[1]}x${p[3]}·${p[3]}x${p[2]} ${dtype(p[4])}·${dtype(p[9])}${p[0]! > 1 ? ` batch ${p[0]}` : ''}`;
  }
  if (name === 'nt_elementwise') return `elementwise op ${p[0]} [${Array.from(p.subarray(7, 7 + p[1]!)).join(', ')}]`;
  return name;
}

export async function profileNativeCalls(lib: NativeKernels, run: () => Promise<unknown>): Promise<NativeCallTimes[]> {
  const symbols = lib.symbols as unknown as Record<string, (...args: unknown[]) => unknown>;
  const originals = { ...symbols };
  const times = new Map<string, NativeCallTimes>();
  for (const [name, fn] of Object.entries(originals)) {
    symbols[name] = (...args: unknown[]) => {
      const t0 = performance.now();
      const c0 = process.cpuUsage();
      const result = fn(...args);
      const cpu = process.cpuUsage(c0);
      const key = callKey(name, args);
      const entry = times.get(key) ?? { key, calls: 0, ms: 0, cpuMs: 0 };
      entry.calls++;
      entry.ms += performance.now() - t0;
      entry.cpuMs += (cpu.user + cpu.system) / 1000;
      times.set(key, entry);
      return result;
    };
  }
  try {
    await run();
  } finally {
    Object.assign(symbols, originals);
  }
  return [...times.values()].sort((a, b) => b.ms - a.ms);
}
