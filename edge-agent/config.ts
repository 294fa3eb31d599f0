import { resolve } from 'node:path';
import { JoinTokenSecret, limits, Region } from '../protocol/index.js';
import type { AttestationOptions } from './attest/attester.js';
import { ConfigError } from './errors.js';

/** The validated configuration of `gpuai-agent run`. */
export interface AgentConfig {
  api: string;
  runtime: 'process';
  /** Absolute: tasks see paths under it (GPUAI_OUTPUT_DIR) from their own working directory. */
  dataDir: string;
  name?: string;
  region: string;
  slots: number;
  pollWaitSeconds: number;
  graceSeconds: number;
  jsonLogs: boolean;
  /** The join token for this node's first registration (`--join-token`, GPUAI_JOIN_TOKEN). */
  joinToken?: string;
  /** What the agent attests with beside its measurement (`--tpm`, `--gpu-token-*`, `--no-attest`). */
  attestation: AttestationOptions;
}

/** `run` options as commander hands them over: strings, flags, and undefined for what was not given. */
export interface RawRunOptions {
  api?: string | undefined;
  runtime?: string | undefined;
  dataDir?: string | undefined;
  name?: string | undefined;
  region?: string | undefined;
  slots?: string | undefined;
  pollWait?: string | undefined;
  graceSeconds?: string | undefined;
  jsonLogs?: boolean | undefined;
  /** `--log-format` or GPUAI_LOG_FORMAT: `json` is the same as `--json-logs`. */
  logFormat?: string | undefined;
  joinToken?: string | undefined;
  tpm?: string | undefined;
  gpuTokenCommand?: string | undefined;
  gpuTokenFile?: string | undefined;
  /** False with `--no-attest`. */
  attest?: boolean | undefined;
}

/** Defaults of the optional `run` options, shared with the CLI help. */
export const runDefaults = { region: 'local', slots: 1, pollWaitSeconds: 20, graceSeconds: 25 } as const;

/** Runtimes this agent can run tasks with. The protocol knows more; they come with later agent versions. */
export const supportedRuntimes = ['process'] as const;

/** Validates every option up front, so a typo fails at start with the option's name, not mid-task. */
export function parseRunConfig(raw: RawRunOptions): AgentConfig {
  const name = raw.name;
  if (name !== undefined && (name.length < 1 || name.length > 64)) {
    throw new ConfigError('--name', 'must be 1 to 64 characters');
  }
  const region = parseRegion(raw.region);
  return {
    api: parseApi(raw.api),
    runtime: parseRuntime(raw.runtime),
    dataDir: resolve(required('--data-dir', raw.dataDir, 'GPUAI_AGENT_DATA_DIR')),
    ...(name === undefined ? {} : { name }),
    region,
    slots: parseInteger('--slots', raw.slots, { default: runDefaults.slots, min: 1, max: 64 }),
    pollWaitSeconds: parseInteger('--poll-wait', raw.pollWait, {
      default: runDefaults.pollWaitSeconds,
      min: 1,
      max: limits.maxWaitSeconds,
    }),
    graceSeconds: parseInteger('--grace-seconds', raw.graceSeconds, {
      default: runDefaults.graceSeconds,
      min: 0,
      max: 3600,
    }),
    jsonLogs: raw.jsonLogs === true || raw.logFormat === 'json',
    ...parseJoinToken(raw.joinToken),
    attestation: parseAttestation(raw),
  };
}

/** `--tpm`, `--gpu-token-command`, `--gpu-token-file`, `--no-attest`. */
function parseAttestation(raw: RawRunOptions): AttestationOptions {
  if (raw.attest === false) return { disabled: true };
  const tcti = raw.tpm?.trim();
  if (tcti !== undefined && !/^(device|swtpm|mssim|tabrmd|libtpms)(:[^\s]*)?$/.test(tcti)) {
    throw new ConfigError('--tpm', `'${tcti}' is not a TCTI (e.g. device:/dev/tpmrm0, swtpm:host=127.0.0.1,port=2321)`);
  }
  if (raw.gpuTokenCommand !== undefined && raw.gpuTokenFile !== undefined) {
    throw new ConfigError('--gpu-token-file', 'give --gpu-token-command or --gpu-token-file, not both');
  }
  const command = raw.gpuTokenCommand?.trim();
  if (command === '') throw new ConfigError('--gpu-token-command', 'must not be empty');
  return {
    ...(tcti === undefined || tcti === '' ? {} : { tpm: { tcti } }),
    ...(command === undefined ? {} : { gpuToken: { kind: 'command' as const, command } }),
    ...(raw.gpuTokenFile === undefined ? {} : { gpuToken: { kind: 'file' as const, path: resolve(raw.gpuTokenFile) } }),
  };
}

/** `--join-token`: checked here so that a token cut short in a copy fails at start, not at registration. */
function parseJoinToken(value: string | undefined): { joinToken?: string } {
  if (value === undefined || value.trim() === '') return {};
  const token = value.trim();
  if (!JoinTokenSecret.safeParse(token).success) {
    throw new ConfigError(
      '--join-token',
      'is not a join token (expected jt_<id>.<secret>, as `gpuai tokens create` prints it)',
    );
  }
  return { joinToken: token };
}

/** `--region`, shared by `run` and `probe`. */
export function parseRegion(value: string | undefined): string {
  const region = value ?? runDefaults.region;
  if (!Region.safeParse(region).success) {
    throw new ConfigError('--region', `'${region}' is not a region: lowercase letters, digits and '-', at most 32`);
  }
  return region;
}

function required(option: string, value: string | undefined, envName?: string): string {
  if (value === undefined || value.trim() === '') {
    throw new ConfigError(option, `is required${envName === undefined ? '' : ` (or set ${envName})`}`);
  }
  return value;
}

function parseApi(value: string | undefined): string {
  const text = required('--api', value, 'GPUAI_API');
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError('--api', `'${text}' is not a URL (expected e.g. http://127.0.0.1:8080)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError('--api', `'${text}' must be an http:// or https:// URL`);
  }
  if (url.search !== '' || url.hash !== '')
    throw new ConfigError('--api', `'${text}' must not have a query or fragment`);
  return url.toString();
}

function parseRuntime(value: string | undefined): 'process' {
  const runtime = required('--runtime', value);
  if (runtime !== 'process') {
    throw new ConfigError(
      '--runtime',
      `'${runtime}' is not available in this agent; supported: ${supportedRuntimes.join(', ')}`,
    );
  }
  return runtime;
}

function parseInteger(
  option: string,
  value: string | undefined,
  range: { default: number; min: number; max: number },
): number {
  if (value === undefined) return range.default;
  const number = /^\d+$/.test(value.trim()) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(number) || number < range.min || number > range.max) {
    throw new ConfigError(option, `'${value}' must be a whole number from ${range.min} to ${range.max}`);
  }
  return number;
}
