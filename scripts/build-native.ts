// Builds the native CPU kernels for this host (see packages/kernels/src/native/build.ts) and prints
// one JSON line: {"ok":true,"path":…,"built":…,"backend":…} or {"ok":false,"error":…}. Exit 0 either
// way: without the library the TypeScript reference backend is used.
import { buildNativeLibrary, nativeKernels } from '@nemotron-ts/kernels';

const build = buildNativeLibrary();
const lib = build.ok ? nativeKernels() : null;
console.log(JSON.stringify(build.ok ? { ...build, backend: lib?.describe() ?? null } : build));
