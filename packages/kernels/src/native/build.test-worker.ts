/** build.test.ts's Worker: builds into the folder it is given, with the compiler it is given. */
import { parentPort, workerData } from 'node:worker_threads';
import { buildNativeLibrary } from './build';

const { compiler, dir } = workerData as { compiler: string; dir: string };
process.env.CC = compiler;
parentPort!.postMessage(buildNativeLibrary([dir]));
