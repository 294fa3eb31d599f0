import * as crypto from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { ManualClock } from '../../../test/support/in-process.js';
import { openDatabase } from '../../adapters/embedded/sqlite.js';
import { SqliteStore } from '../../adapters/embedded/sqlite-store.js';
import { UnauthenticatedError } from '../errors.js';
import { type ApiKeyRecord, ApiKeys, apiKeyItem, hasScope } from './api-keys.js';

vi.mock('node:crypto', async (original) => {
  const actual = await original<typeof import('node:crypto')>();
  return { ...actual, timingSafeEqual: vi.fn(actual.timingSafeEqual) };
});

function setup() {
  const clock = new ManualClock();
  const store = new SqliteStore(openDatabase(':memory:'), clock);
  return { clock, store, keys: new ApiKeys(store, clock) };
}

const parts = (key: string) => {
  const match = /^gpk_([a-z2-7]{20})_([A-Za-z0-9_-]{43})$/.exec(key);
  if (match === null) throw new Error(`not a key: ${key}`);
  return { id: match[1] as string, secret: match[2] as string };
};

async function refusal(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(UnauthenticatedError);
  return (error as UnauthenticatedError).code;
}

describe('API keys', () => {
  it('stores only the sha-256 of a 256-bit secret, and shows the key once', async () => {
    const { keys, store } = setup();
    const created = await keys.create({ tenant: 'acme', scopes: ['submit', 'read'], name: 'ci' });
    const { id, secret } = parts(created.key);
    expect(created).toMatchObject({ id, tenant: 'acme', scopes: ['submit', 'read'], name: 'ci', status: 'active' });
    expect(Buffer.from(secret, 'base64url')).toHaveLength(32);

    const item = await store.get<ApiKeyRecord>(apiKeyItem(id));
    expect(item?.data.secretHash).toBe(crypto.createHash('sha256').update(secret).digest('hex'));
    const stored = JSON.stringify(item);
    expect(stored).not.toContain(secret);
    expect(stored).not.toContain(created.key);

    const listed = await keys.list({ limit: 10 });
    expect(listed.keys).toEqual([{ ...created, key: undefined }].map(({ key: _, ...view }) => view));
    expect(JSON.stringify(listed)).not.toContain(item?.data.secretHash);
  });

  it('authenticates the right key as its tenant and scopes, and compares in constant time', async () => {
    const { keys } = setup();
    const created = await keys.create({ tenant: 'acme', scopes: ['read'] });
    const compare = vi.mocked(crypto.timingSafeEqual);
    compare.mockClear();
    expect(await keys.authenticate(created.key)).toEqual({ tenant: 'acme', keyId: created.id, scopes: ['read'] });
    expect(compare).toHaveBeenCalledTimes(1);
  });

  it('refuses a wrong secret, an unknown id and a malformed key alike (invalid_api_key)', async () => {
    const { keys } = setup();
    const created = await keys.create({ tenant: 'acme', scopes: ['read'] });
    const { id, secret } = parts(created.key);
    const flipped = `${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`;
    expect(await refusal(keys.authenticate(`gpk_${id}_${flipped}`))).toBe('invalid_api_key');
    expect(await refusal(keys.authenticate(`gpk_${'a'.repeat(20)}_${secret}`))).toBe('invalid_api_key');
    expect(await refusal(keys.authenticate(created.key.slice(0, -1)))).toBe('invalid_api_key');
    expect(await refusal(keys.authenticate(''))).toBe('invalid_api_key');
  });

  it('refuses a key once it has expired, and says so only to its holder', async () => {
    const { keys, clock } = setup();
    const created = await keys.create({ tenant: 'acme', scopes: ['read'], ttlMs: 60_000 });
    expect(created.expiresAt).toBe(new Date(clock.now() + 60_000).toISOString());
    clock.advance(59_999);
    await expect(keys.authenticate(created.key)).resolves.toMatchObject({ tenant: 'acme' });
    clock.advance(1);
    expect(await refusal(keys.authenticate(created.key))).toBe('api_key_expired');
    const { id } = parts(created.key);
    expect(await refusal(keys.authenticate(`gpk_${id}_${'x'.repeat(43)}`))).toBe('invalid_api_key');
    expect((await keys.get(id)).status).toBe('expired');
  });

  it('refuses a key without scopes', async () => {
    const { keys } = setup();
    await expect(keys.create({ tenant: 'acme', scopes: [] })).rejects.toMatchObject({ code: 'no_scopes' });
    expect((await keys.list({ limit: 10 })).keys).toEqual([]);
  });

  it('refuses an expiry in the past', async () => {
    const { keys, clock } = setup();
    await expect(keys.create({ tenant: 'acme', scopes: ['read'], expiresAt: clock.now() })).rejects.toMatchObject({
      code: 'expiry_in_past',
    });
    expect((await keys.list({ limit: 10 })).keys).toEqual([]);
  });

  it('refuses a revoked key at once; revoking again changes nothing', async () => {
    const { keys, store, clock } = setup();
    const created = await keys.create({ tenant: 'acme', scopes: ['submit'] });
    const revoked = await keys.revoke(created.id);
    expect(revoked).toMatchObject({ status: 'revoked', revokedAt: new Date(clock.now()).toISOString() });
    expect(await refusal(keys.authenticate(created.key))).toBe('api_key_revoked');

    const before = await store.get(apiKeyItem(created.id));
    clock.advance(1000);
    expect(await keys.revoke(created.id)).toEqual(revoked);
    expect(await store.get(apiKeyItem(created.id))).toEqual(before);
    await expect(keys.revoke('a'.repeat(20))).rejects.toMatchObject({ code: 'api_key_not_found' });
  });

  it('lists every tenant or one, oldest first per tenant', async () => {
    const { keys, clock } = setup();
    const a1 = await keys.create({ tenant: 'acme', scopes: ['read'] });
    clock.advance(1);
    const b1 = await keys.create({ tenant: 'beta', scopes: ['read'] });
    clock.advance(1);
    const a2 = await keys.create({ tenant: 'acme', scopes: ['admin'] });
    expect((await keys.list({ limit: 10 })).keys.map((k) => k.id)).toEqual([a1.id, a2.id, b1.id]);
    expect((await keys.list({ limit: 10, tenant: 'acme' })).keys.map((k) => k.id)).toEqual([a1.id, a2.id]);
    const first = await keys.list({ limit: 1 });
    expect(first.cursor).toBeDefined();
    const second = await keys.list({ limit: 5, cursor: first.cursor as string });
    expect(second.keys.map((k) => k.id)).toEqual([a2.id, b1.id]);
  });

  it('admin implies submit and read; the others imply nothing', () => {
    expect(hasScope({ scopes: ['admin'] }, 'submit')).toBe(true);
    expect(hasScope({ scopes: ['admin'] }, 'read')).toBe(true);
    expect(hasScope({ scopes: ['submit'] }, 'read')).toBe(false);
    expect(hasScope({ scopes: ['read'] }, 'submit')).toBe(false);
    expect(hasScope({ scopes: ['submit', 'read'] }, 'admin')).toBe(false);
  });
});
