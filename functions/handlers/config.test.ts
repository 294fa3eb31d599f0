import { afterEach, describe, expect, it, vi } from 'vitest';
import { queueDefinitions } from '../workers/queues.js';
import { ConfigError, readConfig } from './config.js';

const queueUrls = Object.fromEntries(
  queueDefinitions.map(({ name }) => [name, `https://sqs.eu-west-1.amazonaws.com/123456789012/gpuai-${name}`]),
);

const complete = {
  AWS_REGION: 'eu-west-1',
  TABLE_NAME: 'gpuai-table',
  QUEUE_URLS: JSON.stringify(queueUrls),
  KEY_ID: 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab',
  LEASE_MS: '30000',
  HEARTBEAT_IDLE_MS: '30000',
  HEARTBEAT_BUSY_MS: '10000',
  // No default here: the stack names the mode (infra/context.ts holds the one default, `sqs`).
  DISPATCH_MODE: 'long-poll',
};

describe('readConfig', () => {
  it('maps a complete environment to the adapters and settings', () => {
    expect(readConfig({ ...complete, RECHECK_MS: '2000', GPUAI_SQS_ENDPOINT: 'http://127.0.0.1:5000' })).toEqual({
      region: 'eu-west-1',
      tableName: 'gpuai-table',
      queueUrls,
      keyId: complete.KEY_ID,
      settings: { leaseMs: 30_000, heartbeatIdleMs: 30_000, heartbeatBusyMs: 10_000, recheckMs: 2000 },
      endpoints: { sqs: 'http://127.0.0.1:5000' },
      dispatch: { mode: 'long-poll' },
    });
  });

  it('reads RATE_LIMITS over the default limits, naming a pair it cannot read', async () => {
    const { defaultRateLimits } = await import('../domain/security/rate-limit.js');
    expect(readConfig({ ...complete, RATE_LIMITS: 'registerGlobal=60/60' }).settings.rateLimits).toEqual({
      ...defaultRateLimits,
      registerGlobal: { limit: 60, windowSeconds: 60 },
    });
    expect(() => readConfig({ ...complete, RATE_LIMITS: 'register=10' })).toThrow(/RATE_LIMITS.*"register=10"/);
    expect(readConfig({ ...complete, QUOTAS: 'maxOpenTasks=50' }).settings.quotas).toMatchObject({ maxOpenTasks: 50 });
    expect(() => readConfig({ ...complete, QUOTAS: 'maxOpenTasks=lots' })).toThrow(/QUOTAS/);
  });

  it('reads the sqs dispatch mode, whose prefix and node role are required', () => {
    const sqs = { ...complete, DISPATCH_MODE: 'sqs' };
    expect(() => readConfig(sqs)).toThrow(/POOL_QUEUE_PREFIX is not set; NODE_ROLE_ARN is not set/);
    const roleArn = 'arn:aws:iam::123456789012:role/gpuai-node-work-reader';
    expect(readConfig({ ...sqs, POOL_QUEUE_PREFIX: 'gpuai', NODE_ROLE_ARN: roleArn }).dispatch).toEqual({
      mode: 'sqs',
      poolQueuePrefix: 'gpuai',
      nodeRoleArn: roleArn,
    });
    expect(() => readConfig({ ...complete, DISPATCH_MODE: 'websocket' })).toThrow(/DISPATCH_MODE: /);
  });

  it('refuses a busy heartbeat that is not below the lease, as the embedded config does', () => {
    expect(() => readConfig({ ...complete, HEARTBEAT_BUSY_MS: '30000' })).toThrow(
      /HEARTBEAT_BUSY_MS: must be below LEASE_MS, or leases run out between heartbeats/,
    );
  });

  it.each([
    'AWS_REGION',
    'TABLE_NAME',
    'QUEUE_URLS',
    'KEY_ID',
    'LEASE_MS',
    'HEARTBEAT_IDLE_MS',
    'HEARTBEAT_BUSY_MS',
    'DISPATCH_MODE',
  ] as const)('fails naming %s when it is missing or empty', (name) => {
    const { [name]: _, ...missing } = complete;
    expect(() => readConfig(missing)).toThrow(new ConfigError(`invalid Lambda environment: ${name} is not set`));
    expect(() => readConfig({ ...complete, [name]: '' })).toThrow(`${name} is not set`);
  });

  it('names every bad value at once, down to the queue', () => {
    const error = captureError(() =>
      readConfig({
        ...complete,
        LEASE_MS: 'soon',
        QUEUE_URLS: JSON.stringify({ ...queueUrls, schedule: 'not a url' }),
        GPUAI_KMS_ENDPOINT: 'localhost',
      }),
    );
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.message).toMatch(/LEASE_MS: /);
    expect(error.message).toMatch(/QUEUE_URLS\.schedule: /);
    expect(error.message).toMatch(/GPUAI_KMS_ENDPOINT: /);
    expect(error.message).not.toMatch(/TABLE_NAME/);
  });

  it('refuses queue URLs that are not JSON', () => {
    expect(() => readConfig({ ...complete, QUEUE_URLS: 'schedule=https://x' })).toThrow('QUEUE_URLS: is not JSON');
  });

  it('refuses a busy heartbeat above the idle one', () => {
    expect(() => readConfig({ ...complete, HEARTBEAT_IDLE_MS: '5000' })).toThrow(
      /HEARTBEAT_BUSY_MS: must not be above/,
    );
  });
});

describe('controlPlane', () => {
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.resetModules();
  });

  it('is built once from process.env on first use', async () => {
    for (const [name, value] of Object.entries(complete)) vi.stubEnv(name, value);
    const { controlPlane } = await import('./config.js');
    const cp = controlPlane();
    expect(cp.settings).toMatchObject({
      leaseMs: 30_000,
      heartbeatIdleMs: 30_000,
      heartbeatBusyMs: 10_000,
      livenessMs: 90_000,
    });
    expect(controlPlane()).toBe(cp);
  });

  it('fails fast on first use when the environment is incomplete', async () => {
    for (const [name, value] of Object.entries(complete)) vi.stubEnv(name, value);
    vi.stubEnv('KEY_ID', undefined);
    const { controlPlane } = await import('./config.js');
    expect(() => controlPlane()).toThrow('KEY_ID is not set');
  });

  it('refuses queue URLs that leave out a defined queue', async () => {
    for (const [name, value] of Object.entries(complete)) vi.stubEnv(name, value);
    vi.stubEnv('QUEUE_URLS', JSON.stringify({ schedule: queueUrls.schedule }));
    const { controlPlane } = await import('./config.js');
    expect(() => controlPlane()).toThrow(/has no URL/);
  });
});

function captureError(fn: () => unknown): Error {
  try {
    fn();
  } catch (error) {
    if (error instanceof Error) return error;
  }
  throw new Error('expected an error');
}
