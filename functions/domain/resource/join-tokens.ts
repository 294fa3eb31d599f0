import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import {
  type CreateJoinTokenRequest,
  type JoinTokenStatus,
  type JoinTokenView,
  joinTokenPattern,
} from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { ItemKey, Store, Write } from '../../ports/store.js';
import { ForbiddenError, InvalidRequestError, NotFoundError, UnauthenticatedError } from '../errors.js';
import { isoTime, sortableTime, updateWithRetry } from '../records.js';
import { newJobId } from '../scheduling/job-id.js';
import { acceleratorClasses, poolInScope, type RegionPolicy, regionAllowed } from './pools.js';

/**
 * A join token as stored: `JOINTOKEN#<id>` / `JOINTOKEN`, listed through byOwner `JOINTOKENS`
 * (oldest first). Only the SHA-256 of the secret is kept; the secret is 256 random bits, so a
 * plain hash is as strong as a slow one and lets a registration check it in one read.
 */
export interface JoinTokenRecord {
  id: string;
  operator: string;
  pools?: string[];
  description?: string;
  /** SHA-256 of the secret (the part after the dot), hex. */
  secretHash: string;
  createdAt: number;
  expiresAt: number;
  maxUses?: number;
  uses: number;
  revokedAt?: number;
  /** The principal that made the token (tenant and key id), for the audit trail. */
  createdBy?: { tenant: string; keyId?: string };
}

export const joinTokenKey = (id: string): ItemKey => ({ pk: `JOINTOKEN#${id}`, sk: 'JOINTOKEN' });
export const joinTokenListPk = 'JOINTOKENS';

/** Tokens stay listable (as expired) this long after they expire; then the store drops them. */
const keptAfterExpiryMs = 30 * 24 * 3600_000;

/** The one answer for a token that is malformed, unknown, or whose secret is wrong: no oracle for ids. */
const invalidToken = () => new UnauthenticatedError('invalid_join_token', 'the join token is not valid');

const hashSecret = (secret: string): Buffer => createHash('sha256').update(secret, 'utf8').digest();

export function joinTokenStatus(token: JoinTokenRecord, now: number): JoinTokenStatus {
  if (token.revokedAt !== undefined) return 'revoked';
  if (now >= token.expiresAt) return 'expired';
  if (token.maxUses !== undefined && token.uses >= token.maxUses) return 'used-up';
  return 'active';
}

export function toJoinTokenView(token: JoinTokenRecord, now: number): JoinTokenView {
  return {
    id: token.id,
    operator: token.operator,
    ...(token.pools === undefined ? {} : { pools: token.pools }),
    ...(token.description === undefined ? {} : { description: token.description }),
    status: joinTokenStatus(token, now),
    uses: token.uses,
    ...(token.maxUses === undefined ? {} : { maxUses: token.maxUses }),
    createdAt: isoTime(token.createdAt),
    expiresAt: isoTime(token.expiresAt),
    ...(token.revokedAt === undefined ? {} : { revokedAt: isoTime(token.revokedAt) }),
  };
}

function putJoinToken(token: JoinTokenRecord, expectVersion: number): Write {
  return {
    kind: 'put',
    key: joinTokenKey(token.id),
    data: token,
    indexes: { byOwner: { pk: joinTokenListPk, sk: `${sortableTime(token.createdAt)}#${token.id}` } },
    expiresAt: Math.ceil((token.expiresAt + keptAfterExpiryMs) / 1000),
    expectVersion,
  };
}

/** A token that admitted a registration, and the write that counts the use: part of the node's transaction. */
export interface Admission {
  token: JoinTokenRecord;
  consume: Write;
}

/**
 * Join tokens: made by an admin for an operator, shown once, presented by a node at its first
 * registration. A token expires, can be revoked, may be limited to a number of registrations, and
 * may be scoped to pools; a use is counted in the same transaction that writes the node, so a
 * refused or failed registration spends nothing and a token of one use admits exactly one node.
 */
export class JoinTokens {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    /** The regions this deployment serves: a scope naming another could admit no node. */
    private readonly regions: RegionPolicy = '*',
  ) {}

  /** Makes a token; the returned `secret` is the only copy the control plane ever hands out. */
  async create(
    request: Omit<CreateJoinTokenRequest, 'ttlSeconds'> & { ttlSeconds: number },
    createdBy?: JoinTokenRecord['createdBy'],
  ): Promise<{ token: JoinTokenRecord; secret: string }> {
    for (const scope of request.pools ?? []) this.assertServable(scope);
    const now = this.clock.now();
    const id = `jt_${newJobId(now).slice('job_'.length)}`;
    const secretPart = randomBytes(32).toString('base64url');
    const token: JoinTokenRecord = {
      id,
      operator: request.operator,
      ...(request.pools === undefined ? {} : { pools: [...new Set(request.pools)].sort() }),
      ...(request.description === undefined ? {} : { description: request.description }),
      secretHash: hashSecret(secretPart).toString('hex'),
      createdAt: now,
      expiresAt: now + request.ttlSeconds * 1000,
      ...(request.maxUses === undefined ? {} : { maxUses: request.maxUses }),
      uses: 0,
      ...(createdBy === undefined ? {} : { createdBy }),
    };
    await this.store.transact([putJoinToken(token, 0)]);
    return { token, secret: `${id}.${secretPart}` };
  }

  /**
   * @throws {@link InvalidRequestError} `pool_not_served` when a scope names a region this
   *   deployment does not serve or an accelerator class that does not exist (no node could use it).
   */
  private assertServable(scope: string): void {
    const [region = '', cls = ''] = scope.split('/');
    if (region !== '*' && !regionAllowed(region, this.regions)) {
      throw new InvalidRequestError(
        'pool_not_served',
        `no node can join pool scope ${scope}: region '${region}' is not served here`,
      );
    }
    if (cls !== '*' && !acceleratorClasses.has(cls)) {
      throw new InvalidRequestError(
        'pool_not_served',
        `no node can join pool scope ${scope}: '${cls}' is not an accelerator class (${[...acceleratorClasses].join(', ')})`,
      );
    }
  }

  /** The token as the API shows it, its status as of now. */
  view(token: JoinTokenRecord): JoinTokenView {
    return toJoinTokenView(token, this.clock.now());
  }

  async get(id: string): Promise<JoinTokenRecord> {
    const item = await this.store.get<JoinTokenRecord>(joinTokenKey(id));
    if (item === undefined) throw new NotFoundError('join_token_not_found', `no join token ${id}`);
    return item.data;
  }

  async list(limit: number, cursor?: string): Promise<{ tokens: JoinTokenRecord[]; cursor?: string }> {
    const page = await this.store.query<JoinTokenRecord>({
      index: 'byOwner',
      pk: joinTokenListPk,
      limit,
      ...(cursor === undefined ? {} : { cursor }),
    });
    return { tokens: page.items.map((i) => i.data), ...(page.cursor === undefined ? {} : { cursor: page.cursor }) };
  }

  /** Revokes a token: it admits no further registration. Nodes it admitted stay enrolled. Idempotent. */
  async revoke(id: string): Promise<JoinTokenRecord> {
    const revoked = await updateWithRetry<JoinTokenRecord, JoinTokenRecord>(this.store, joinTokenKey(id), (current) => {
      if (current === undefined) throw new NotFoundError('join_token_not_found', `no join token ${id}`);
      if (current.data.revokedAt !== undefined) return undefined;
      const token = { ...current.data, revokedAt: this.clock.now() };
      return { writes: [putJoinToken(token, current.version)], result: token };
    });
    return revoked ?? this.get(id);
  }

  /**
   * Checks `presented` for a registration into `pools` and returns the write that counts its use,
   * which the caller commits with the node. The write expects the token's version as read, so a
   * token revoked or used up meanwhile fails the whole transaction.
   *
   * @throws UnauthenticatedError `invalid_join_token` (malformed, unknown, wrong secret),
   *   `join_token_revoked`, `join_token_expired` or `join_token_used_up`.
   * @throws ForbiddenError `pool_not_in_token_scope` when a pool lies outside the token's scope.
   */
  async admit(presented: string, pools: readonly string[], now: number): Promise<Admission> {
    const match = joinTokenPattern.exec(presented);
    if (match === null) throw invalidToken();
    const [, id = '', secretPart = ''] = match;
    const item = await this.store.get<JoinTokenRecord>(joinTokenKey(id));
    if (item === undefined) throw invalidToken();
    const token = item.data;
    const expected = Buffer.from(token.secretHash, 'hex');
    const actual = hashSecret(secretPart);
    if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) throw invalidToken();
    // The secret is right: from here on, saying why the token is refused tells its holder nothing new.
    const status = joinTokenStatus(token, now);
    if (status !== 'active') {
      const code = { revoked: 'join_token_revoked', expired: 'join_token_expired', 'used-up': 'join_token_used_up' }[
        status
      ];
      throw new UnauthenticatedError(code, `the join token ${id} is ${status}`);
    }
    const outside = pools.filter((pool) => !poolInScope(pool, token.pools));
    if (outside.length > 0) {
      throw new ForbiddenError(
        'pool_not_in_token_scope',
        `the join token ${id} admits nodes into ${token.pools?.join(', ')} only, not ${outside.join(', ')}`,
      );
    }
    return { token, consume: putJoinToken({ ...token, uses: token.uses + 1 }, item.version) };
  }
}
