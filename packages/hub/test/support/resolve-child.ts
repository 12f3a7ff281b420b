/** A separate process resolving a repository into a shared cache: `bun resolve-child.ts <repo> <cacheDir> <endpoint>`; prints the snapshot folder. */
import { resolveCheckpoint } from '../../src';

const [repo, cacheDir, endpoint] = process.argv.slice(2) as [string, string, string];
const folder = await resolveCheckpoint(repo, { cacheDir, endpoint, progressBar: false });
console.log(folder);
