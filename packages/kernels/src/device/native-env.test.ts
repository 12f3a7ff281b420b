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
