/**
 * Minimal flag parsing for the CLI: `--name value`, `--name=value`, `--flag`, and positional
 * arguments. A value that starts with `--` must be given as `--name=--value` (otherwise it reads as
 * the next flag, and the errors say so).
 */

export interface ParsedArgs {
  positional: string[];
  flags: Map<string, string | true>;
  /** Flags that got no value because the next argument starts with `--`, by that next flag's name. */
  valuelessBefore?: Map<string, string>;
}

export function parseArgs(argv: readonly string[], booleanFlags: readonly string[] = []): ParsedArgs {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  const valuelessBefore = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq > 0 ? a.slice(2, eq) : a.slice(2);
    if (eq > 0) flags.set(name, a.slice(eq + 1));
    else if (booleanFlags.includes(name) || i + 1 >= argv.length || argv[i + 1]!.startsWith('--')) {
      flags.set(name, true);
      const next = argv[i + 1];
      if (!booleanFlags.includes(name) && next !== undefined) valuelessBefore.set(next.slice(2).split('=')[0]!, name);
    } else flags.set(name, argv[++i]!);
  }
  return { positional, flags, valuelessBefore };
}

export class UsageError extends Error {
  override name = 'UsageError';
}

/** A request refused for the state it finds (exit code 2, without the usage text), e.g. a busy `--out`. */
export class RefusedError extends Error {
  override name = 'RefusedError';
}

/** A string flag's value, or `fallback`; throws a usage error naming the flag when it is given without a value. */
export function stringFlag(args: ParsedArgs, name: string, fallback?: string): string | undefined {
  const v = args.flags.get(name);
  if (v === undefined) return fallback;
  if (v === true) throw new UsageError(`--${name} needs a value (write a value that starts with "--" as --${name}=VALUE)`);
  return v;
}

/** Largest seed: generation's sampler and the trainer's generator take a u32. */
export const MAX_SEED = 0xffffffff;

/** An integer flag in [min, max] (default: the safe integers), or `fallback`. */
export function integerFlag(args: ParsedArgs, name: string, min: number, fallback?: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const v = numberFlag(args, name, fallback);
  if (v !== undefined && (!Number.isInteger(v) || v < min || v > max)) {
    throw new UsageError(`--${name} must be an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `in [${min}, ${max}]`}, got ${v}`);
  }
  return v;
}

export function numberFlag(args: ParsedArgs, name: string, fallback?: number): number | undefined {
  const v = stringFlag(args, name);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got '${v}'`);
  return n;
}

export function requireFlag(args: ParsedArgs, name: string): string {
  const v = stringFlag(args, name);
  if (v === undefined) throw new UsageError(`missing --${name}`);
  return v;
}

/** Rejects flags the command does not know, so typos fail loudly. */
export function checkFlags(args: ParsedArgs, known: readonly string[]): void {
  for (const name of args.flags.keys()) {
    if (known.includes(name)) continue;
    const owner = args.valuelessBefore?.get(name);
    const hint = owner && known.includes(owner) ? ` (if it is the value of --${owner}, write --${owner}=--${name})` : '';
    throw new UsageError(`unknown flag --${name}${hint}`);
  }
}
