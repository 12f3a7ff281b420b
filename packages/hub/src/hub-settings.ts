/**
 * Where the Hub is and who we are to it, from options first, then the environment variables the
 * Python tools use: HF_ENDPOINT, HF_TOKEN (or the token file `huggingface-cli login` writes),
 * HF_HUB_OFFLINE, HF_HUB_CACHE / HF_HOME, HF_HUB_DISABLE_PROGRESS_BARS.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { defaultHubCacheDir, huggingFaceHome } from './repo-cache';

/** huggingface_hub's default endpoint (the JS library's HUB_URL, not imported here: see libraries.ts). */
const DEFAULT_ENDPOINT = 'https://huggingface.co';

/** Explicit settings; each overrides its environment variable. */
export interface HubSettingsOptions {
  endpoint?: string;
  token?: string;
  localFilesOnly?: boolean;
  cacheDir?: string;
  progressBar?: boolean;
}

/** The settings in effect for one call. */
export interface HubSettings {
  readonly endpoint: string;
  readonly token: string | undefined;
  readonly offline: boolean;
  readonly cacheDir: string;
  readonly progressBar: boolean;
}

/** True for "1", "true", "yes", "on" (any case), as huggingface_hub reads boolean variables. */
export function envFlag(name: string): boolean {
  return ['1', 'true', 'yes', 'on'].includes((process.env[name] ?? '').trim().toLowerCase());
}

/** Options merged over the environment (read at call time). */
export function hubSettings(options: HubSettingsOptions = {}): HubSettings {
  return {
    endpoint: (options.endpoint ?? process.env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, ''),
    token: options.token ?? (process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || storedToken()),
    offline: options.localFilesOnly ?? envFlag('HF_HUB_OFFLINE'),
    cacheDir: options.cacheDir ?? defaultHubCacheDir(),
    progressBar: options.progressBar ?? (process.stderr.isTTY === true && !envFlag('HF_HUB_DISABLE_PROGRESS_BARS')),
  };
}

/** The token saved by `huggingface-cli login` (HF_TOKEN_PATH, else <HF_HOME>/token). */
function storedToken(): string | undefined {
  const home = huggingFaceHome();
  const path = process.env.HF_TOKEN_PATH ?? join(home, 'token');
  try {
    return readFileSync(path, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
