import { describe, expect, it } from 'vitest';
import { parseRunConfig } from '../../edge-agent/config.js';
import { EnrollmentRefusedError, errorFromResponse, explainRegistrationRefusal } from '../../edge-agent/errors.js';
import { readEnv } from '../../embedded/config.js';
import { defaultRegions, parseRegionPolicy } from '../../functions/domain/resource/pools.js';
import { readConfig } from '../../functions/handlers/config.js';

const token = `jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K.${'a'.repeat(43)}`;

describe('enrollment settings', () => {
  it('embedded: token enrollment, 7-day expiry and the canonical regions unless told otherwise', () => {
    const env = readEnv({});
    expect(env.GPUAI_ENROLLMENT).toBe('token');
    expect(env.GPUAI_NODE_EXPIRY_MS).toBe(7 * 24 * 3600_000);
    expect(env.GPUAI_REGIONS).toBeUndefined();
    const open = readEnv({ GPUAI_ENROLLMENT: 'open', GPUAI_REGIONS: 'lab-1, lab-2', GPUAI_NODE_EXPIRY_MS: '3600000' });
    expect(open).toMatchObject({
      GPUAI_ENROLLMENT: 'open',
      GPUAI_REGIONS: ['lab-1', 'lab-2'],
      GPUAI_NODE_EXPIRY_MS: 3600_000,
    });
    expect(readEnv({ GPUAI_REGIONS: '*' }).GPUAI_REGIONS).toBe('*');
    expect(() => readEnv({ GPUAI_ENROLLMENT: 'anyone' })).toThrow(/GPUAI_ENROLLMENT/);
    expect(() => readEnv({ GPUAI_REGIONS: 'EU West' })).toThrow(/GPUAI_REGIONS/);
    expect(() => readEnv({ GPUAI_NODE_EXPIRY_MS: '5' })).toThrow(/GPUAI_NODE_EXPIRY_MS/);
  });

  it('cloud: GPUAI_ENROLLMENT, NODE_EXPIRY_MS and NODE_REGIONS become settings; absent, the defaults hold', () => {
    const base = {
      AWS_REGION: 'eu-west-1',
      TABLE_NAME: 't',
      QUEUE_URLS: '{}',
      KEY_ID: 'k',
      LEASE_MS: '30000',
      HEARTBEAT_IDLE_MS: '30000',
      HEARTBEAT_BUSY_MS: '10000',
      DISPATCH_MODE: 'long-poll',
    };
    expect(readConfig(base).settings).not.toHaveProperty('enrollment');
    expect(
      readConfig({ ...base, GPUAI_ENROLLMENT: 'open', NODE_EXPIRY_MS: '86400000', NODE_REGIONS: 'eu-west' }).settings,
    ).toMatchObject({ enrollment: 'open', nodeExpiryMs: 86_400_000, regions: ['eu-west'] });
    expect(() => readConfig({ ...base, GPUAI_ENROLLMENT: 'yes' })).toThrow(/GPUAI_ENROLLMENT/);
    expect(() => readConfig({ ...base, NODE_REGIONS: 'a,,b' })).toThrow(/NODE_REGIONS/);
  });

  it('parses region policies', () => {
    expect(parseRegionPolicy('*')).toBe('*');
    expect(parseRegionPolicy('eu-west,eu-west,local')).toEqual(['eu-west', 'local']);
    expect(parseRegionPolicy('eu west')).toBeUndefined();
    expect(defaultRegions).toContain('local');
  });
});

describe('the agent and join tokens', () => {
  const minimal = { api: 'http://127.0.0.1:8080', runtime: 'process', dataDir: 'agent-data' };

  it('takes --join-token (or GPUAI_JOIN_TOKEN through commander) and refuses a mangled one at start', () => {
    expect(parseRunConfig({ ...minimal, joinToken: ` ${token}\n` }).joinToken).toBe(token);
    expect(parseRunConfig({ ...minimal, joinToken: '' })).not.toHaveProperty('joinToken');
    expect(parseRunConfig(minimal)).not.toHaveProperty('joinToken');
    expect(() => parseRunConfig({ ...minimal, joinToken: token.slice(0, -1) })).toThrow(
      /--join-token: is not a join token/,
    );
  });

  it('turns a refused registration into advice, and leaves other errors alone', () => {
    const refusal = (status: number, code: string) =>
      errorFromResponse(status, JSON.stringify({ error: { code, message: 'refused' } }), new Headers());
    const explained = (error: unknown) => {
      try {
        explainRegistrationRefusal(error);
      } catch (thrown) {
        return thrown;
      }
      throw new Error('did not throw');
    };
    const required = explained(refusal(401, 'join_token_required'));
    expect(required).toBeInstanceOf(EnrollmentRefusedError);
    expect((required as Error).message).toMatch(/^registration refused: .*--join-token or set GPUAI_JOIN_TOKEN/);
    expect((explained(refusal(401, 'join_token_expired')) as Error).message).toMatch(/expired: ask for a new one/);
    expect((explained(refusal(403, 'pool_not_in_token_scope')) as Error).message).toMatch(/does not cover/);
    const other = refusal(401, 'bad_signature');
    expect(explained(other)).toBe(other);
    const network = new Error('ECONNREFUSED');
    expect(explained(network)).toBe(network);
  });
});
