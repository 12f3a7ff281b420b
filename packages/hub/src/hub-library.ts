/**
 * `@huggingface/hub`, imported on first use: loading it added ~7 MiB to the resident set of every
 * process that imports this package (bench-small's whole bf16 prefill peaks near 190 MiB), and most
 * of them (a local checkpoint, a benchmark) never reach the Hub.
 */
import type * as HubLibrary from '@huggingface/hub';

let library: typeof HubLibrary | null = null;

/** The library, loaded now if it was not yet. */
export async function hubLibrary(): Promise<typeof HubLibrary> {
  library ??= await import('@huggingface/hub');
  return library;
}

/** The library if some call loaded it already (an error of its own can only come after that), else null. */
export function loadedHubLibrary(): typeof HubLibrary | null {
  return library;
}
