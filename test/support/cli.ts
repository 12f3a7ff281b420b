/** The `nemotron` CLI (src/cli/main.ts) run as a child process, and a small JSONL corpus to train it on. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** The repository root: the CLI's working directory. */
export const ROOT = join(import.meta.dir, '..', '..');
/** The CLI's entry point. */
export const CLI = join(ROOT, 'src/cli/main.ts');

/** `nemotron ...args` run to completion: its exit code and output. */
export function nemotron(...args: string[]): { code: number; stdout: string; stderr: string } {
  return nemotronWith(process.env, ...args);
}

/** `nemotron ...args` run to completion in the environment `env` (in place of this process's). */
export function nemotronWith(env: Record<string, string | undefined>, ...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = Bun.spawnSync([process.execPath, CLI, ...args], { cwd: ROOT, env, stdout: 'pipe', stderr: 'pipe' });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

/** Writes 12 documents ("document i: the cat sat on the mat.") as JSONL `{text}` lines to `path`; the path. */
export async function writeCatDocuments(path: string): Promise<string> {
  await writeFile(path, Array.from({ length: 12 }, (_, i) => JSON.stringify({ text: `document ${i}: the cat sat on the mat.` })).join('\n'));
  return path;
}
