/** Turning the Hub's HTTP answers into messages that say what to do. */
import type { HubApiError } from '@huggingface/hub';
import { HubError } from './errors';
import { hubLibraryIfLoaded } from './libraries';

function isHubApiError(e: unknown): e is HubApiError {
  const lib = hubLibraryIfLoaded();
  return lib !== null && e instanceof lib.HubApiError;
}

/** A clear HubError for a failure while accessing `what` (a repo or repo/file). */
export function hubErrorFrom(e: unknown, what: string, token: string | undefined, endpoint: string): HubError {
  if (e instanceof HubError && e.status === undefined) return e;
  const status = isHubApiError(e) ? e.statusCode : e instanceof HubError ? e.status : undefined;
  const url = isHubApiError(e) ? ` (${e.url})` : '';
  switch (status) {
    case 401:
      return new HubError(
        token
          ? `${what}: the Hub at ${endpoint} answered 401 Unauthorized: the access token (token option or HF_TOKEN) was rejected; check that it is valid and has read access${url}`
          : `${what}: the Hub at ${endpoint} answered 401 Unauthorized: the repository is private or gated; set HF_TOKEN or pass a token${url}`,
        401,
      );
    case 403:
      return new HubError(
        `${what}: the Hub answered 403 Forbidden: this token has no access; for a gated model, accept its terms on the model page first${url}`,
        403,
      );
    case 404:
      return new HubError(`${what}: not found on the Hub at ${endpoint} (check the repository id and the revision)${url}`, 404);
  }
  if (status !== undefined) return new HubError(`${what}: the Hub answered ${status}: ${(e as Error).message}`, status);
  if (e instanceof TypeError && /access token/.test(e.message)) return new HubError(`${what}: ${e.message} (check HF_TOKEN or the token option)`);
  if (isNetworkError(e))
    return new HubError(`${what}: cannot reach the Hub at ${endpoint}: ${(e as Error).message}. Set HF_HUB_OFFLINE=1 to use only the local cache.`);
  return new HubError(`${what}: unexpected answer from the Hub at ${endpoint}: ${e instanceof Error ? e.message : String(e)}`);
}

/** A failure to connect or a dropped connection (fetch rejects these with a TypeError). */
export function isNetworkError(e: unknown): boolean {
  return e instanceof TypeError && !isHubApiError(e);
}
