import {
  canonicalRequest,
  maxClockSkewMs,
  nodeIdFromPublicKey,
  signatureHeaders,
  signedDatePattern,
  verifySignature,
} from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import { ConditionFailedError, type Store } from '../../ports/store.js';
import { ForbiddenError, UnauthenticatedError } from '../errors.js';
import type { NodeRegistry } from '../resource/node-registry.js';

export interface SignedRequest {
  method: string;
  pathWithQuery: string;
  body: string;
  header(name: string): string | undefined;
}

/**
 * How a route refuses a replayed request: `nonce`, a TTL'd nonce item written per request (for
 * requests at the rate of tasks: registration, polls, claims, results, failures, credentials,
 * attestation), or `date`, the signed date handed to the route, which takes it only when later
 * than the last of its stream (a node's heartbeats, an attempt's progress reports) inside the write
 * it makes anyway, so those frequent requests write no nonce (docs/cost-model.md section 9).
 */
export type ReplayCheck = 'nonce' | 'date';

export interface Authenticated {
  nodeId: string;
  /** The request's signed `x-gpuai-date`, epoch ms: under the `date` check, the route must compare it. */
  dateMs: number;
}

/** Public keys remembered per node id; beyond this the oldest are forgotten (and read again). */
const maxCachedKeys = 100_000;

/**
 * Authenticates node requests signed as protocol/signing.ts describes. Checks, in order: the
 * headers are present, the date is within the skew window, the signature verifies under the
 * node's registered key (or, at registration, the key being registered), and, under the `nonce`
 * check, the nonce was not seen before. A nonce is remembered for twice the skew window, which
 * covers every date a replay could still pass with.
 *
 * A node's id is derived from its public key, so the key behind an id never changes: it is read
 * once and cached for the life of the process (a Lambda sandbox). Whether the node still exists is
 * then the route's write to find out (a presence or task write of a node that is gone fails).
 */
export class RequestAuthenticator {
  private readonly keys = new Map<string, string>();

  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly clock: Clock,
  ) {}

  /** Returns the authenticated node id. `registeringKey` is the public key in a registration body. */
  async authenticate(req: SignedRequest, registeringKey?: string): Promise<string> {
    return (await this.verify(req, { ...(registeringKey === undefined ? {} : { registeringKey }) })).nodeId;
  }

  /**
   * Verifies the request and returns the node and signed date. `replay: 'date'` writes no nonce:
   * the caller must refuse a date not later than its stream's last.
   */
  async verify(
    req: SignedRequest,
    options: { registeringKey?: string; replay?: ReplayCheck } = {},
  ): Promise<Authenticated> {
    const registeringKey = options.registeringKey;
    const nodeId = req.header(signatureHeaders.node);
    const date = req.header(signatureHeaders.date);
    const nonce = req.header(signatureHeaders.nonce);
    const signature = req.header(signatureHeaders.signature);
    if (!nodeId || !date || !nonce || !signature) {
      throw new UnauthenticatedError(
        'unauthenticated',
        `node requests must be signed: headers ${Object.values(signatureHeaders).join(', ')}`,
      );
    }
    if (!/^[A-Za-z0-9_-]{16,64}$/.test(nonce)) throw new UnauthenticatedError('unauthenticated', 'malformed nonce');
    if (!signedDatePattern.test(date)) {
      throw new UnauthenticatedError(
        'unauthenticated',
        `${signatureHeaders.date} must be epoch milliseconds in decimal digits, got ${JSON.stringify(date.slice(0, 32))}`,
      );
    }
    const dateMs = Number(date);
    const now = this.clock.now();
    if (!Number.isSafeInteger(dateMs) || Math.abs(now - dateMs) > maxClockSkewMs) {
      throw new UnauthenticatedError(
        'stale_request',
        `request date ${date} is more than ${maxClockSkewMs / 1000} s from server time ${now}`,
      );
    }
    let publicKey: string;
    if (registeringKey !== undefined) {
      if (nodeIdFromPublicKey(registeringKey) !== nodeId) {
        throw new UnauthenticatedError(
          'unauthenticated',
          `${signatureHeaders.node} does not match the registered public key`,
        );
      }
      publicKey = registeringKey;
    } else {
      publicKey = this.keys.get(nodeId) ?? (await this.readKey(nodeId));
    }
    const message = canonicalRequest(req.method, req.pathWithQuery, dateMs, nonce, req.body);
    if (!verifySignature(publicKey, message, signature)) {
      throw new UnauthenticatedError('bad_signature', 'the request signature does not verify');
    }
    if (options.replay === 'date') return { nodeId, dateMs };
    try {
      await this.store.transact([
        {
          kind: 'put',
          key: { pk: `NONCE#${nodeId}#${nonce}`, sk: 'NONCE' },
          data: { at: now },
          expiresAt: Math.ceil((now + 2 * maxClockSkewMs) / 1000),
          expectVersion: 0,
        },
      ]);
    } catch (error) {
      if (error instanceof ConditionFailedError)
        throw new UnauthenticatedError('replayed_request', 'this nonce was already used');
      throw error;
    }
    return { nodeId, dateMs };
  }

  private async readKey(nodeId: string): Promise<string> {
    const node = await this.registry.find(nodeId);
    if (node === undefined) throw new UnauthenticatedError('unknown_node', `node ${nodeId} is not registered`);
    // Only a key that derives the id is kept: the cache can then never hold a wrong one.
    if (nodeIdFromPublicKey(node.publicKey) === nodeId) {
      this.keys.set(nodeId, node.publicKey);
      if (this.keys.size > maxCachedKeys) {
        const oldest = this.keys.keys().next().value;
        if (oldest !== undefined) this.keys.delete(oldest);
      }
    }
    return node.publicKey;
  }

  /** A node may act only on its own resources. */
  static assertSameNode(authenticated: string, pathNodeId: string): void {
    if (authenticated !== pathNodeId) {
      throw new ForbiddenError('forbidden', `node ${authenticated} may not act for node ${pathNodeId}`);
    }
  }
}
