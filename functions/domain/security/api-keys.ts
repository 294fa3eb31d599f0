import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  type ApiKeyView,
  apiKeyPattern,
  apiKeyPrefix,
  type CreatedApiKey,
  type Scope,
} from '../../../protocol/api-keys.js';
import type { Clock } from '../../ports/clock.js';
import type { ItemKey, Store, Write } from '../../ports/store.js';
import { InvalidRequestError, NotFoundError, UnauthenticatedError } from '../errors.js';
import { isoTime, sortableTime, updateWithRetry } from '../records.js';

/**
 * API keys as stored. One item per key, read by id on every authenticated request:
 *
 *   APIKEY#<keyId> / APIKEY                       the record below (secret hash, tenant, scopes)
 *   byOwner  APIKEYS / <tenant>#<createdAt>#<keyId>   every key, by tenant, oldest first: the admin's
 *                                                     network-wide list (skPrefix `<tenant>#` for one tenant)
 *
 * Keys are few and made by an operator, so one index partition for all of them stays cold. A
 * revoked or expired key stays readable (so its holder is told why it is refused) and the item is
 * deleted by the store's TTL {@link retentionMs} later.
 *
 * Only the sha-256 of the secret is stored: the secret is 256 random bits, so a fast hash is as
 * good as a slow one (there is nothing to brute-force), and presented secrets are compared with
 * `timingSafeEqual`.
 */
export interface ApiKeyRecord {
  id: string;
  tenant: string;
  scopes: Scope[];
  name?: string;
  /** sha-256 of the secret part, hex. */
  secretHash: string;
  createdAt: number;
  expiresAt?: number;
  revokedAt?: number;
  /** The key id (or `jwt:<tenant>`) of whoever created it; absent for keys the deployment made itself. */
  createdBy?: string;
}

/** Who is calling an application route. */
export interface Principal {
  /** The tenant that owns what the caller submits and the only one whose jobs it sees. */
  tenant: string;
  /** The API key used; absent when an OIDC token (API Gateway's JWT authorizer) identified the caller. */
  keyId?: string;
  scopes: Scope[];
}

/** How long a revoked or expired key stays readable before the store's TTL removes it. */
export const retentionMs = 30 * 86_400_000;

export const apiKeyItem = (id: string): ItemKey => ({ pk: `APIKEY#${id}`, sk: 'APIKEY' });
export const apiKeysIndexPk = 'APIKEYS';

const base32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** 20 base32 characters: 100 random bits, public, names the record. */
function newKeyId(): string {
  return Array.from(randomBytes(20), (b) => base32[b % 32]).join('');
}

const sha256 = (text: string): Buffer => createHash('sha256').update(text, 'utf8').digest();

/** Whether `principal` may act with `scope`: admin implies submit and read. */
export const hasScope = (principal: Pick<Principal, 'scopes'>, scope: Scope): boolean =>
  principal.scopes.includes(scope) || principal.scopes.includes('admin');

export function keyStatus(record: ApiKeyRecord, now: number): ApiKeyView['status'] {
  if (record.revokedAt !== undefined) return 'revoked';
  if (record.expiresAt !== undefined && record.expiresAt <= now) return 'expired';
  return 'active';
}

export function toApiKeyView(record: ApiKeyRecord, now: number): ApiKeyView {
  return {
    id: record.id,
    tenant: record.tenant,
    scopes: record.scopes,
    ...(record.name === undefined ? {} : { name: record.name }),
    createdAt: isoTime(record.createdAt),
    ...(record.expiresAt === undefined ? {} : { expiresAt: isoTime(record.expiresAt) }),
    ...(record.revokedAt === undefined ? {} : { revokedAt: isoTime(record.revokedAt) }),
    status: keyStatus(record, now),
  };
}

function putKey(record: ApiKeyRecord, expectVersion: number): Write {
  const ends = record.revokedAt ?? record.expiresAt;
  return {
    kind: 'put',
    key: apiKeyItem(record.id),
    data: record,
    indexes: { byOwner: { pk: apiKeysIndexPk, sk: `${record.tenant}#${sortableTime(record.createdAt)}#${record.id}` } },
    ...(ends === undefined ? {} : { expiresAt: Math.ceil((ends + retentionMs) / 1000) }),
    expectVersion,
  };
}

/** What {@link ApiKeys.create} takes. */
export interface NewApiKey {
  tenant: string;
  scopes: readonly Scope[];
  name?: string;
  /** Epoch ms; must lie in the future. */
  expiresAt?: number;
  /** Lifetime from now, instead of `expiresAt`. */
  ttlMs?: number;
  createdBy?: string;
}

/**
 * Creation, authentication, listing and revocation of API keys.
 *
 * @example
 * const { key } = await apiKeys.create({ tenant: 'acme', scopes: ['submit', 'read'] });
 * const principal = await apiKeys.authenticate(key); // { tenant: 'acme', keyId, scopes }
 */
export class ApiKeys {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
  ) {}

  /**
   * A new key and the write that stores it, without storing it: callers that need the key at once
   * (a test harness, a bootstrap) know it before the write lands.
   */
  mint(input: NewApiKey): { created: CreatedApiKey; write: Write } {
    const now = this.clock.now();
    const expiresAt = input.ttlMs === undefined ? input.expiresAt : now + input.ttlMs;
    if (expiresAt !== undefined && expiresAt <= now) {
      throw new InvalidRequestError('expiry_in_past', `the expiry ${isoTime(expiresAt)} is already past`);
    }
    if (input.scopes.length === 0) throw new InvalidRequestError('no_scopes', 'an API key needs at least one scope');
    const id = newKeyId();
    const secret = randomBytes(32).toString('base64url');
    const record: ApiKeyRecord = {
      id,
      tenant: input.tenant,
      scopes: [...new Set(input.scopes)],
      ...(input.name === undefined ? {} : { name: input.name }),
      secretHash: sha256(secret).toString('hex'),
      createdAt: now,
      ...(expiresAt === undefined ? {} : { expiresAt }),
      ...(input.createdBy === undefined ? {} : { createdBy: input.createdBy }),
    };
    return {
      created: { ...toApiKeyView(record, now), key: `${apiKeyPrefix}${id}_${secret}` },
      write: putKey(record, 0),
    };
  }

  /** Creates and stores a key; the returned `key` is the only copy of the secret there will ever be. */
  async create(input: NewApiKey): Promise<CreatedApiKey> {
    const { created, write } = this.mint(input);
    await this.store.transact([write]);
    return created;
  }

  /**
   * The principal a presented key stands for. The secret is checked before anything about the
   * key's state is said, so only its holder learns that a key expired or was revoked.
   *
   * @throws {@link UnauthenticatedError} `invalid_api_key`, `api_key_expired` or `api_key_revoked`.
   */
  async authenticate(presented: string): Promise<Principal> {
    const match = apiKeyPattern.exec(presented);
    if (match === null) {
      throw new UnauthenticatedError(
        'invalid_api_key',
        `the API key is malformed: expected ${apiKeyPrefix}<20 characters>_<43 characters>`,
      );
    }
    const [, id = '', secret = ''] = match;
    const item = await this.store.get<ApiKeyRecord>(apiKeyItem(id));
    // Hash both sides even for an unknown id, so timing does not tell known ids from unknown ones.
    const expected = item === undefined ? sha256('') : Buffer.from(item.data.secretHash, 'hex');
    const same = timingSafeEqual(expected, sha256(secret));
    if (item === undefined || !same) throw new UnauthenticatedError('invalid_api_key', 'the API key is not valid');
    const record = item.data;
    const now = this.clock.now();
    if (record.revokedAt !== undefined) {
      throw new UnauthenticatedError('api_key_revoked', `API key ${id} was revoked at ${isoTime(record.revokedAt)}`);
    }
    if (record.expiresAt !== undefined && record.expiresAt <= now) {
      throw new UnauthenticatedError('api_key_expired', `API key ${id} expired at ${isoTime(record.expiresAt)}`);
    }
    return { tenant: record.tenant, keyId: id, scopes: record.scopes };
  }

  async get(id: string): Promise<ApiKeyView> {
    const item = await this.store.get<ApiKeyRecord>(apiKeyItem(id));
    if (item === undefined) throw new NotFoundError('api_key_not_found', `no API key ${id}`);
    return toApiKeyView(item.data, this.clock.now());
  }

  /** Every key (or one tenant's), by tenant then oldest first. Never the secret or its hash. */
  async list(options: { tenant?: string; limit: number; cursor?: string }): Promise<{
    keys: ApiKeyView[];
    cursor?: string;
  }> {
    const page = await this.store.query<ApiKeyRecord>({
      index: 'byOwner',
      pk: apiKeysIndexPk,
      limit: options.limit,
      ...(options.tenant === undefined ? {} : { skPrefix: `${options.tenant}#` }),
      ...(options.cursor === undefined ? {} : { cursor: options.cursor }),
    });
    const now = this.clock.now();
    return {
      keys: page.items.map((item) => toApiKeyView(item.data, now)),
      ...(page.cursor === undefined ? {} : { cursor: page.cursor }),
    };
  }

  /** Revokes a key at once: its next request is refused. Revoking a revoked key changes nothing. */
  async revoke(id: string): Promise<ApiKeyView> {
    const now = this.clock.now();
    const record = await updateWithRetry<ApiKeyRecord, ApiKeyRecord>(this.store, apiKeyItem(id), (current) => {
      if (current === undefined) throw new NotFoundError('api_key_not_found', `no API key ${id}`);
      if (current.data.revokedAt !== undefined) return undefined;
      const revoked = { ...current.data, revokedAt: now };
      return { writes: [putKey(revoked, current.version)], result: revoked };
    });
    return record === undefined ? this.get(id) : toApiKeyView(record, now);
  }
}
