/**
 * Where the CLI finds its API key, first match wins (as `aws` and `gh` do):
 *
 *   1. `--api-key <key>`                         (visible in the process list: prefer 2 or 3)
 *   2. `$GPUAI_API_KEY`
 *   3. the credentials file, `$XDG_CONFIG_HOME/gpuai/credentials` (default `~/.config/gpuai/credentials`),
 *      which must not be readable by group or others (like ssh, the CLI refuses it otherwise):
 *
 *        # a key for every control plane
 *        api_key = gpk_...
 *        # a key for one control plane, chosen when --api (or $GPUAI_API) is this URL
 *        [https://gpuai.example.com]
 *        api_key = gpk_...
 *
 *   4. the embedded control plane's admin key, `$GPUAI_DATA_DIR/admin-key` (default
 *      `./.gpuai/admin-key`), which `npm start` writes on first start. Only ever sent to a control
 *      plane on this machine (--api naming 127.x.y.z, localhost, [::1] or 0.0.0.0), so a local admin key
 *      never travels to a remote one.
 *
 * @module
 */
import { readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { CliError, ExitCode } from './errors.js';

/** The credentials file is unusable: readable by others, or not in the documented format. */
export class CredentialsError extends CliError {
  override name = 'CredentialsError';
  readonly exitCode = ExitCode.usage;
  readonly code = 'credentials_error';
}

/** Where a key came from, for `--verbose`-style notes and tests. */
export type KeySource = 'flag' | 'env' | 'credentials-file' | 'admin-key' | 'none';

export interface ResolvedKey {
  key?: string;
  source: KeySource;
  /** The file it was read from, for the two file sources. */
  file?: string;
  /** Something the user should know (a file with a too-wide mode that was still used). */
  warning?: string;
  /** With no key: the sources tried and how to provide one, for the error a 401 turns into. */
  tried?: string[];
}

type Env = Readonly<Record<string, string | undefined>>;

/** `$XDG_CONFIG_HOME/gpuai/credentials`, else `$HOME/.config/gpuai/credentials`; none without either. */
export function credentialsFilePath(env: Env): string | undefined {
  const config = env.XDG_CONFIG_HOME || (env.HOME ? join(env.HOME, '.config') : undefined);
  return config === undefined ? undefined : join(config, 'gpuai', 'credentials');
}

/** `$GPUAI_DATA_DIR/admin-key`, else `./.gpuai/admin-key` (where `gpuai start` keeps it). */
export function adminKeyPath(env: Env): string {
  return join(resolve(env.GPUAI_DATA_DIR || '.gpuai'), 'admin-key');
}

/**
 * Whether `apiUrl` names this machine, so the local admin key may be sent there: an IPv4 literal
 * in 127.0.0.0/8, `localhost`, `[::1]`, or `0.0.0.0` (which connects to this host, and which
 * `gpuai start --host 0.0.0.0` prints in its next steps). Only literals: a name such as
 * `127.0.0.1.nip.io` or `127.attacker.example` resolves wherever its owner wants.
 */
export const isLoopbackUrl = (apiUrl: string): boolean => {
  let host: string;
  try {
    // The URL parser lowercases names and writes IPv4 literals as four decimal octets.
    host = new URL(apiUrl).hostname;
  } catch {
    return false;
  }
  return (
    host === 'localhost' ||
    host === '[::1]' ||
    host === '0.0.0.0' ||
    /^127\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)\.(25[0-5]|2[0-4]\d|1?\d?\d)$/.test(host)
  );
};

const normalizeUrl = (url: string): string => url.trim().replace(/\/+$/, '');

/** The mode bits beyond the owner's, or undefined when the file does not exist. */
function wideMode(file: string): { exists: false } | { exists: true; mode: number; wide: boolean } {
  try {
    const mode = statSync(file).mode & 0o777;
    return { exists: true, mode, wide: (mode & 0o077) !== 0 };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { exists: false };
    throw new CredentialsError(`cannot read ${file}: ${(error as Error).message}`);
  }
}

/**
 * The key in a credentials file for `apiUrl`: the `api_key` of a `[<url>]` section naming it,
 * else the top-level `api_key`.
 */
export function parseCredentials(text: string, apiUrl: string, file = 'credentials file'): string | undefined {
  const wanted = normalizeUrl(apiUrl);
  let section: string | undefined;
  let general: string | undefined;
  let specific: string | undefined;
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = normalizeUrl(header[1] as string);
      continue;
    }
    const pair = /^([A-Za-z_]+)\s*=\s*(\S+)$/.exec(line);
    if (pair === null || pair[1] !== 'api_key') {
      throw new CredentialsError(`${file}:${index + 1}: expected "api_key = gpk_..." or "[<control plane URL>]"`);
    }
    if (section === undefined) general = pair[2];
    else if (section === wanted) specific = pair[2];
  }
  return specific ?? general;
}

/**
 * Resolves the API key for a request to `apiUrl` (see the module comment for the order).
 *
 * @throws {@link CredentialsError} when the credentials file is readable by group or others, or
 *   malformed: better to stop than to use a key that others may already have read.
 */
export function resolveApiKey(flag: string | undefined, env: Env, apiUrl: string): ResolvedKey {
  if (flag !== undefined && flag !== '') return { key: flag.trim(), source: 'flag' };
  if (env.GPUAI_API_KEY) return { key: env.GPUAI_API_KEY.trim(), source: 'env' };

  const credentials = credentialsFilePath(env);
  if (credentials !== undefined) {
    const stat = wideMode(credentials);
    if (stat.exists) {
      if (stat.wide) {
        throw new CredentialsError(
          `${credentials} is readable by others (mode ${stat.mode.toString(8).padStart(4, '0')}); ` +
            `run: chmod 600 ${credentials}`,
        );
      }
      const key = parseCredentials(readFileSync(credentials, 'utf8'), apiUrl, credentials);
      if (key !== undefined) return { key, source: 'credentials-file', file: credentials };
    }
  }

  if (isLoopbackUrl(apiUrl)) {
    const file = adminKeyPath(env);
    const stat = wideMode(file);
    if (stat.exists) {
      const key = readFileSync(file, 'utf8').trim();
      if (key !== '') {
        return {
          key,
          source: 'admin-key',
          file,
          ...(stat.wide
            ? { warning: `${file} is readable by others (mode ${stat.mode.toString(8)}); run: chmod 600 ${file}` }
            : {}),
        };
      }
    }
  }
  return { source: 'none', tried: triedSources(env, apiUrl) };
}

/** Where {@link resolveApiKey} looked, each with why it gave nothing, and what to do. */
function triedSources(env: Env, apiUrl: string): string[] {
  const credentials = credentialsFilePath(env);
  const adminKey = adminKeyPath(env);
  const exists = (file: string) => wideMode(file).exists;
  return [
    'no API key found; looked in:',
    '  --api-key: not given',
    '  $GPUAI_API_KEY: not set',
    credentials === undefined
      ? '  the credentials file: none (neither $XDG_CONFIG_HOME nor $HOME is set)'
      : `  the credentials file ${credentials}: ${exists(credentials) ? `no api_key for ${apiUrl}` : 'no such file'}`,
    isLoopbackUrl(apiUrl)
      ? `  the local admin key ${adminKey}: ${exists(adminKey) ? 'empty' : 'no such file'} (in $GPUAI_DATA_DIR, else ./.gpuai)`
      : `  the local admin key ${adminKey}: not used, it is only sent to a control plane on this machine`,
    'to fix: pass --api-key, set GPUAI_API_KEY, or put "api_key = gpk_..." in the credentials file (chmod 600);',
    '  for the control plane `gpuai start` runs here, run from the directory it was started in,',
    '  or set GPUAI_DATA_DIR to its data dir',
  ];
}
