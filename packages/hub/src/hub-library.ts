/**
 * `@huggingface/hub`, imported on first use. Loading it instantiates its WASM hashing helpers and
 * task tables: ~18 MiB of resident memory (measured with Bun 1.4 on Linux), which a process that only
 * reads local checkpoints or the cache should not carry. Network paths await {@link hubLibrary}.
 */
type HubLibrary = typeof import('@huggingface/hub');

let loaded: HubLibrary | null = null;

/** The library, loading it the first time. */
export async function hubLibrary(): Promise<HubLibrary> {
  loaded ??= await import('@huggingface/hub');
  return loaded;
}

/** The library when something already loaded it, else null (its errors cannot exist before that). */
export function hubLibraryIfLoaded(): HubLibrary | null {
  return loaded;
}
