/**
 * `nemotron train`'s output folder with real processes: one trainer per `--out` (a second one, also
 * with `--resume`, exits 2 naming the folder and the owner; the lock goes on SIGTERM; a dead owner's
 * lock is taken over), an interrupted run's temporary folders removed, `--save-total-limit`, a bad
 * `--out` found before training, and `--resume` with changed flags (refused or applied, said so).
 */
import { describe, expect, test } from 'bun:test';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { warmupCosineSchedule } from '@nemotron-ts/kernels';
import { checkRoomForCheckpoint } from '../src/cli/train-out-dir';
import { OUT_DIR_LOCK_FILE } from '../src/train';
import { CLI, nemotron, ROOT, writeCatDocuments } from './support/cli';
import { scratchWithTinyModel } from './support/scratch';

const { scratch, modelDir } = await scratchWithTinyModel('cli-train-out');
const dataPath = await writeCatDocuments(join(scratch, 'data.jsonl'));

const common = ['--model', modelDir, '--data', dataPath, '--seq-len', '16', '--batch-size', '2', '--lr', '1e-3', '--warmup', '1', '--device', 'cpu'];

/** A pid no process has now (a child that has exited). */
async function deadPid(): Promise<number> {
  const child = Bun.spawn(['true']);
  await child.exited;
  return child.pid;
}

const exists = (path: string) => Bun.file(path).exists();

describe('nemotron train --out', () => {
  test('a second trainer on a busy --out exits 2 naming it and the owner; SIGTERM releases the lock', async () => {
    const out = join(scratch, 'busy');
    const first = Bun.spawn([process.execPath, CLI, 'train', ...common, '--out', out, '--steps', '100000'], { cwd: ROOT, stdout: 'ignore', stderr: 'pipe' });
    try {
      const lock = join(out, OUT_DIR_LOCK_FILE);
      for (let i = 0; i < 300 && !(await exists(lock)); i++) await Bun.sleep(50);
      expect(await exists(lock)).toBe(true);
      for (const extra of [[], ['--resume']]) {
        const second = nemotron('train', ...common, '--out', out, '--steps', '2', ...extra);
        expect(second.code).toBe(2);
        expect(second.stderr).toContain(`--out ${out} is in use by another trainer (pid ${first.pid} on this host`);
        expect(second.stderr).not.toContain('usage:');
      }
      first.kill('SIGTERM');
      expect(await first.exited).toBe(143);
      expect(await exists(lock)).toBe(false);
    } finally {
      first.kill('SIGKILL');
    }
  }, 60_000);

  test('three trainers started at once on one --out: exactly one runs; SIGINT releases its lock', async () => {
    const out = join(scratch, 'race');
    const procs = Array.from({ length: 3 }, () =>
      Bun.spawn([process.execPath, CLI, 'train', ...common, '--out', out, '--steps', '100000'], { cwd: ROOT, stdout: 'ignore', stderr: 'pipe' }),
    );
    try {
      // The two that lose exit at once; the winner trains on.
      for (let i = 0; i < 400 && procs.filter((p) => p.exitCode !== null).length < 2; i++) await Bun.sleep(50);
      await Bun.sleep(500);
      expect(procs.map((p) => p.exitCode).sort()).toEqual([2, 2, null]);
      const winner = procs.find((p) => p.exitCode === null)!;
      expect(JSON.parse(await Bun.file(join(out, OUT_DIR_LOCK_FILE)).text()).pid).toBe(winner.pid);
      winner.kill('SIGINT');
      expect(await winner.exited).toBe(130);
      expect(await exists(join(out, OUT_DIR_LOCK_FILE))).toBe(false);
    } finally {
      for (const p of procs) p.kill('SIGKILL');
    }
  }, 60_000);

  test("a dead trainer's lock and temporary folders are taken over and removed; --save-total-limit keeps the newest", async () => {
    const out = join(scratch, 'stale');
    const pid = await deadPid();
    // Killed between saves, and killed inside a checkpoint's savePretrained (its atomic-folder temporary).
    const partial = join(out, `.checkpoint-7.partial-${pid}`);
    const insideSave = join(out, `..checkpoint-8.partial-${pid}.tmp-${pid}-0123abcd`);
    for (const dir of [partial, insideSave]) {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, 'model.safetensors'), 'half');
    }
    await writeFile(join(out, OUT_DIR_LOCK_FILE), JSON.stringify({ pid, host: hostname(), token: 'old', started: '2026-01-01T00:00:00.000Z' }));
    const run = nemotron('train', ...common, '--out', out, '--steps', '4', '--save-every', '1', '--save-total-limit', '2');
    expect(run.code).toBe(0);
    expect(run.stderr).toContain(`took over the lock of a trainer that is gone (pid ${pid}`);
    expect(run.stderr).toContain(`removed 2 unfinished checkpoint folder(s) of an interrupted run: ${insideSave}, ${partial}`);
    expect(run.stderr).toContain(`deleted ${join(out, 'checkpoint-2')} (--save-total-limit 2)`);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-3', 'checkpoint-4', 'log.jsonl', 'loss.svg', 'report.html']);

    // Resumed from the newest with a limit of 1: it goes only once checkpoint-5 is whole.
    const resumed = nemotron('train', ...common, '--out', out, '--steps', '5', '--save-total-limit', '1', '--resume');
    expect(resumed.code).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['checkpoint-5', 'log.jsonl', 'loss.svg', 'report.html']);

    // Another host's lock cannot be judged stale.
    await writeFile(join(out, OUT_DIR_LOCK_FILE), JSON.stringify({ pid: 1, host: 'elsewhere', token: 't', started: '2026-01-01T00:00:00.000Z' }));
    const foreign = nemotron('train', ...common, '--out', out, '--steps', '6', '--resume');
    expect(foreign.code).toBe(2);
    expect(foreign.stderr).toContain(
      `pid 1 on host elsewhere, since 2026-01-01T00:00:00.000Z); wait for it to finish or choose another --out (if no trainer runs there any more, delete ${join(out, OUT_DIR_LOCK_FILE)})`,
    );
  }, 60_000);

  test('a bad --out fails before training, naming the flag and the path', async () => {
    const file = join(scratch, 'a-file');
    await writeFile(file, 'x');
    const cases: [string, string][] = [
      [file, 'is a file, not a folder'],
      [join(file, 'run'), 'a part of the path is a file, not a folder'],
    ];
    for (const [out, why] of cases) {
      const r = nemotron('train', ...common, '--out', out, '--steps', '2');
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`--out ${out}: cannot create or write the output folder (${why})`);
      expect(r.stderr).not.toContain('step 1/');
    }
    await expect(checkRoomForCheckpoint(scratch, 2 ** 60)).rejects.toThrow(
      new RegExp(`--out ${scratch}: .* MiB free on its file system, but a checkpoint of this run takes about 1099511627776\\.0 MiB`),
    );
  }, 60_000);

  test('--resume: a changed --lr or --weight-decay applies from the resumed step, said on stderr; a changed --seq-len is refused', async () => {
    const out = join(scratch, 'changed');
    expect(nemotron('train', ...common, '--out', out, '--steps', '2').code).toBe(0);
    const seq = nemotron('train', ...common, '--out', out, '--steps', '3', '--seq-len', '12', '--resume');
    expect(seq.code).toBe(2);
    expect(seq.stderr).toContain(`--resume: ${join(out, 'checkpoint-2')} was trained with --seq-len 16 (this run has 12)`);

    // --eval-every without --eval-data holds rows out: the training rows would change under the data position.
    const rows = nemotron('train', ...common, '--out', out, '--steps', '3', '--eval-every', '1', '--resume');
    expect(rows.code).toBe(2);
    expect(rows.stderr).toMatch(
      /was trained on 29 rows \(hash [0-9a-f]{8}\), this run's --data .* gives 28 \(hash [0-9a-f]{8}\); a resumed run must train on the same rows/,
    );

    const resumed = nemotron('train', ...common, '--out', out, '--steps', '3', '--resume', '--lr', '5e-4', '--weight-decay', '0.1');
    expect(resumed.code).toBe(0);
    expect(resumed.stderr).toContain("--lr 0.0005 applies from step 3 on (the checkpoint's run had 0.001)");
    expect(resumed.stderr).toContain("--weight-decay 0.1 applies from step 3 on (the checkpoint's run had 0.01)");
    expect(resumed.stderr).toContain("--steps 3 applies from step 3 on (the checkpoint's run had 2)");
    const step = JSON.parse(resumed.stdout.trim().split('\n')[0]!) as { step: number; lr: number };
    const scale = warmupCosineSchedule({ warmupSteps: 1, totalSteps: 3, minRatio: 0 })(2);
    expect(step.step).toBe(3);
    expect(step.lr).toBeCloseTo(5e-4 * scale, 10);
  }, 60_000);
});
