import { describe, expect, it } from 'vitest';
import { ConfigError, readEnv } from './config.js';

describe('embedded config', () => {
  it('has defaults for everything', () => {
    expect(readEnv({})).toEqual({
      GPUAI_LEASE_MS: 30_000,
      GPUAI_HEARTBEAT_MS: 5000,
      GPUAI_REAPER_INTERVAL_MS: 1000,
      GPUAI_LOG_FORMAT: 'text',
    });
  });
  it('names the variable that holds a bad value', () => {
    expect(() => readEnv({ GPUAI_LEASE_MS: 'soon' })).toThrow(ConfigError);
    expect(() => readEnv({ GPUAI_LEASE_MS: 'soon' })).toThrow(/GPUAI_LEASE_MS/);
    expect(() => readEnv({ GPUAI_LOG_FORMAT: 'xml' })).toThrow(/GPUAI_LOG_FORMAT/);
  });
});
