/**
 * The Hugging Face libraries this package runs on, each loaded on first use, so that a process only
 * carries those it calls. Resident memory each adds at import (Bun 1.4 on Linux): `@huggingface/hub`
 * ~18 MiB (its WASM hashing helpers and task tables), `@huggingface/tokenizers` ~8 MiB and
 * `@huggingface/jinja` ~3 MiB. A process that generates from token ids, trains on tokenized data or
 * runs as a pipeline worker needs none of them.
 *
 * The hub library is only needed on network paths, which are async. Tokenizers and templates are
 * built by synchronous constructors, so those two are required synchronously (Bun's `require` loads
 * ES modules too, and its bundler resolves it for the browser build).
 */
type HubLibrary = typeof import('@huggingface/hub');
type TokenizersLibrary = typeof import('@huggingface/tokenizers');
type JinjaLibrary = typeof import('@huggingface/jinja');

let hub: HubLibrary | null = null;
let tokenizers: TokenizersLibrary | null = null;
let jinja: JinjaLibrary | null = null;

/** `@huggingface/hub`, loading it the first time. */
export async function hubLibrary(): Promise<HubLibrary> {
  hub ??= await import('@huggingface/hub');
  return hub;
}

/** `@huggingface/hub` when something already loaded it, else null (its errors cannot exist before that). */
export function hubLibraryIfLoaded(): HubLibrary | null {
  return hub;
}

/** `@huggingface/tokenizers`, loading it the first time. */
export function tokenizersLibrary(): TokenizersLibrary {
  tokenizers ??= require('@huggingface/tokenizers') as TokenizersLibrary;
  return tokenizers;
}

/** `@huggingface/jinja`, loading it the first time. */
export function jinjaLibrary(): JinjaLibrary {
  jinja ??= require('@huggingface/jinja') as JinjaLibrary;
  return jinja;
}
