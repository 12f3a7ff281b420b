// The shared-library probe decides whether Dawn's Vulkan backend is tried at all, so it must say
// "loads" for a library that loads (Bun's dlopen rejected the old empty symbol table, which made
// every library look missing) and give the loader's reason otherwise.
import { expect, test } from 'bun:test';
import { sharedLibraryProbe } from './native-env';

const linuxBun = process.platform === 'linux' && Boolean(process.versions.bun);

test.if(linuxBun)('a library that exists, with a symbol it exports, loads', async () => {
  expect(await sharedLibraryProbe('libc.so.6', 'setenv')).toBeNull();
});

test.if(linuxBun)('a missing library or symbol gives the loader its reason', async () => {
  expect(await sharedLibraryProbe('libnemotron-does-not-exist.so.1', 'f')).toMatch(/libnemotron-does-not-exist\.so\.1/);
  expect(await sharedLibraryProbe('libc.so.6', 'nemotron_no_such_symbol')).toMatch(/nemotron_no_such_symbol/);
});

/** Runs `body` (statements with `withStderrFiltered` in scope) in a fresh process: it rewires fd 2. */
function filteredChild(body: string): { code: number; stdout: string; stderr: string } {
  const script = `const { withStderrFiltered } = await import(${JSON.stringify(`${import.meta.dir}/native-env.ts`)});
    const { writeSync } = await import('node:fs');
    const drop = /^Warning: maxDynamic\\w+ artificially reduced/;
    ${body}`;
  const r = Bun.spawnSync([process.execPath, '-e', script], { stdout: 'pipe', stderr: 'pipe' });
  return { code: r.exitCode, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

test.if(linuxBun)('stderr written during the call loses only the lines matched, and keeps its order', () => {
  const r = filteredChild(`
    writeSync(2, 'before\\n');
    const v = await withStderrFiltered(async () => {
      writeSync(2, 'first\\nWarning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 90 to 16\\n');
      await Bun.sleep(1);
      writeSync(2, 'last, no newline');
      return 7;
    }, drop);
    writeSync(2, 'after\\n');
    console.log(v);`);
  expect(r.code).toBe(0);
  expect(r.stdout.trim()).toBe('7');
  expect(r.stderr).toBe('before\nfirst\nlast, no newline\nafter\n');
});

test.if(linuxBun)('a throwing call gets stderr back and its error through', () => {
  const r = filteredChild(`
    try {
      await withStderrFiltered(async () => { writeSync(2, 'kept\\n'); throw new Error('boom'); }, drop);
    } catch (e) { console.log(e.message); }
    writeSync(2, 'restored\\n');`);
  expect(r.stdout.trim()).toBe('boom');
  expect(r.stderr).toBe('kept\nrestored\n');
});

test.if(linuxBun)('a call made while another is filtering runs unfiltered, and stderr ends where it began', () => {
  const r = filteredChild(`
    const inner = () => withStderrFiltered(async () => { await Bun.sleep(5); writeSync(2, 'inner\\n'); return 1; }, drop);
    const outer = withStderrFiltered(async () => { await Bun.sleep(10); writeSync(2, 'outer\\n'); return 2; }, drop);
    console.log(await Promise.all([outer, inner()]));
    writeSync(2, 'after\\n');`);
  expect(r.code).toBe(0);
  expect(r.stderr).toBe('inner\nouter\nafter\n');
});
