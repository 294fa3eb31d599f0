import { describe, expect, it } from 'vitest';
import { defaultQuotas } from '../functions/domain/security/quotas.js';
import { defaultRateLimits } from '../functions/domain/security/rate-limit.js';
import { ConfigError, readEnv } from './config.js';

describe('embedded config', () => {
  it('has defaults for everything', () => {
    expect(readEnv({})).toEqual({
      GPUAI_LEASE_MS: 30_000,
      GPUAI_HEARTBEAT_IDLE_MS: 30_000,
      GPUAI_HEARTBEAT_BUSY_MS: 10_000,
      GPUAI_REAPER_INTERVAL_MS: 1000,
      GPUAI_LOG_FORMAT: 'text',
      GPUAI_ENROLLMENT: 'token',
      GPUAI_NODE_EXPIRY_MS: 7 * 24 * 3600_000,
      GPUAI_ALLOWED_HOSTS: [],
      GPUAI_RATE_LIMITS: defaultRateLimits,
      GPUAI_QUOTAS: defaultQuotas,
    });
  });
  it('names the variable that holds a bad value', () => {
    expect(() => readEnv({ GPUAI_LEASE_MS: 'soon' })).toThrow(ConfigError);
    expect(() => readEnv({ GPUAI_LEASE_MS: 'soon' })).toThrow(/GPUAI_LEASE_MS/);
    expect(() => readEnv({ GPUAI_LOG_FORMAT: 'xml' })).toThrow(/GPUAI_LOG_FORMAT/);
    expect(() => readEnv({ GPUAI_RATE_LIMITS: 'register=ten/60' })).toThrow(/GPUAI_RATE_LIMITS.*register=ten\/60/);
    expect(() => readEnv({ GPUAI_RATE_LIMITS: 'everything=1/60' })).toThrow(/GPUAI_RATE_LIMITS/);
  });
  it('refuses a busy heartbeat that is not below the lease, as the cloud config does', () => {
    expect(() => readEnv({ GPUAI_LEASE_MS: '3000', GPUAI_HEARTBEAT_BUSY_MS: '5000' })).toThrow(
      /GPUAI_HEARTBEAT_BUSY_MS: must be below GPUAI_LEASE_MS/,
    );
    expect(() => readEnv({ GPUAI_LEASE_MS: '5000', GPUAI_HEARTBEAT_BUSY_MS: '5000' })).toThrow(ConfigError);
    expect(readEnv({ GPUAI_LEASE_MS: '5001', GPUAI_HEARTBEAT_BUSY_MS: '5000' }).GPUAI_LEASE_MS).toBe(5001);
    // The idle interval may exceed the lease: a node beats at once when it takes a task.
    expect(readEnv({ GPUAI_LEASE_MS: '20000', GPUAI_HEARTBEAT_IDLE_MS: '60000' }).GPUAI_HEARTBEAT_IDLE_MS).toBe(60_000);
    expect(() => readEnv({ GPUAI_HEARTBEAT_IDLE_MS: '5000' })).toThrow(/GPUAI_HEARTBEAT_BUSY_MS: must not be above/);
  });
  it('reads rate limits over the defaults and the allowed hosts', () => {
    const env = readEnv({ GPUAI_RATE_LIMITS: 'register=5/30, address=0/60', GPUAI_ALLOWED_HOSTS: 'gpu.lan, box:8080' });
    expect(env.GPUAI_RATE_LIMITS).toEqual({
      ...defaultRateLimits,
      register: { limit: 5, windowSeconds: 30 },
      address: { limit: 0, windowSeconds: 60 },
    });
    expect(env.GPUAI_ALLOWED_HOSTS).toEqual(['gpu.lan', 'box:8080']);
    expect(readEnv({ GPUAI_QUOTAS: 'gpuHoursPerDay=0' }).GPUAI_QUOTAS).toEqual({ ...defaultQuotas, gpuHoursPerDay: 0 });
    expect(() => readEnv({ GPUAI_QUOTAS: 'gpus=8' })).toThrow(/GPUAI_QUOTAS.*"gpus=8"/);
  });
});
