import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRunConfig, type RawRunOptions } from './config.js';
import { ConfigError } from './errors.js';

const minimal: RawRunOptions = { api: 'http://127.0.0.1:8080', runtime: 'process', dataDir: 'agent-data' };

describe('parseRunConfig', () => {
  it('fills in defaults and makes the data dir absolute', () => {
    expect(parseRunConfig(minimal)).toEqual({
      api: 'http://127.0.0.1:8080/',
      runtime: 'process',
      dataDir: resolve('agent-data'),
      region: 'local',
      slots: 1,
      pollWaitSeconds: 20,
      graceSeconds: 25,
      jsonLogs: false,
      attestation: {},
    });
  });

  it('takes the attestation options, and refuses a bad TCTI or two token sources', () => {
    expect(parseRunConfig(minimal).attestation).toEqual({});
    expect(parseRunConfig({ ...minimal, attest: false }).attestation).toEqual({ disabled: true });
    expect(
      parseRunConfig({ ...minimal, tpm: 'swtpm:host=127.0.0.1,port=2321', gpuTokenCommand: 'nv-token' }).attestation,
    ).toEqual({ tpm: { tcti: 'swtpm:host=127.0.0.1,port=2321' }, gpuToken: { kind: 'command', command: 'nv-token' } });
    expect(parseRunConfig({ ...minimal, gpuTokenFile: 'token.jwt' }).attestation).toEqual({
      gpuToken: { kind: 'file', path: resolve('token.jwt') },
    });
    expect(() => parseRunConfig({ ...minimal, tpm: 'http://tpm' })).toThrow(/--tpm/);
    expect(() => parseRunConfig({ ...minimal, gpuTokenCommand: 'a', gpuTokenFile: 'b' })).toThrow(/--gpu-token-file/);
  });

  it('takes every option', () => {
    const config = parseRunConfig({
      ...minimal,
      api: 'https://cp.example/gpuai',
      name: 'rig-1',
      region: 'eu-west',
      slots: '4',
      pollWait: '5',
      graceSeconds: '0',
      jsonLogs: true,
    });
    expect(config).toMatchObject({
      api: 'https://cp.example/gpuai',
      name: 'rig-1',
      region: 'eu-west',
      slots: 4,
      pollWaitSeconds: 5,
      graceSeconds: 0,
      jsonLogs: true,
    });
  });

  it('logs JSON for --log-format json (GPUAI_LOG_FORMAT), as for --json-logs', () => {
    expect(parseRunConfig({ ...minimal, logFormat: 'json' }).jsonLogs).toBe(true);
    expect(parseRunConfig({ ...minimal, logFormat: 'text' }).jsonLogs).toBe(false);
  });

  it.each<[RawRunOptions, string]>([
    [{ ...minimal, runtime: 'docker' }, "--runtime: 'docker' is not available in this agent; supported: process"],
    [{ ...minimal, runtime: undefined }, '--runtime: is required'],
    [{ ...minimal, api: undefined }, '--api: is required (or set GPUAI_API)'],
    [{ ...minimal, api: 'localhost:8080' }, "--api: 'localhost:8080' must be an http:// or https:// URL"],
    [{ ...minimal, api: 'not a url' }, "--api: 'not a url' is not a URL (expected e.g. http://127.0.0.1:8080)"],
    [{ ...minimal, dataDir: ' ' }, '--data-dir: is required (or set GPUAI_AGENT_DATA_DIR)'],
    [{ ...minimal, slots: '0' }, "--slots: '0' must be a whole number from 1 to 64"],
    [{ ...minimal, slots: '2.5' }, "--slots: '2.5' must be a whole number from 1 to 64"],
    [{ ...minimal, pollWait: '21' }, "--poll-wait: '21' must be a whole number from 1 to 20"],
    [{ ...minimal, graceSeconds: '-1' }, "--grace-seconds: '-1' must be a whole number from 0 to 3600"],
    [{ ...minimal, region: 'EU West' }, "--region: 'EU West' is not a region"],
    [{ ...minimal, name: 'n'.repeat(65) }, '--name: must be 1 to 64 characters'],
  ])('refuses %j', (raw, message) => {
    expect(() => parseRunConfig(raw)).toThrow(ConfigError);
    expect(() => parseRunConfig(raw)).toThrow(message);
  });
});
