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
 * Authenticates node requests signed as protocol/signing.ts describes. Checks, in order: the
 * headers are present, the date is within the skew window, the signature verifies under the
 * node's registered key (or, at registration, the key being registered), and the nonce was not
 * seen before. A nonce is remembered for twice the skew window, which covers every date a replay
 * could still pass with.
 */
export class RequestAuthenticator {
  constructor(
    private readonly store: Store,
    private readonly registry: NodeRegistry,
    private readonly clock: Clock,
  ) {}

  /** Returns the authenticated node id. `registeringKey` is the public key in a registration body. */
  async authenticate(req: SignedRequest, registeringKey?: string): Promise<string> {
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
      const node = await this.registry.find(nodeId);
      if (node === undefined) throw new UnauthenticatedError('unknown_node', `node ${nodeId} is not registered`);
      publicKey = node.publicKey;
    }
    const message = canonicalRequest(req.method, req.pathWithQuery, dateMs, nonce, req.body);
    if (!verifySignature(publicKey, message, signature)) {
      throw new UnauthenticatedError('bad_signature', 'the request signature does not verify');
    }
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
    return nodeId;
  }

  /** A node may act only on its own resources. */
  static assertSameNode(authenticated: string, pathNodeId: string): void {
    if (authenticated !== pathNodeId) {
      throw new ForbiddenError('forbidden', `node ${authenticated} may not act for node ${pathNodeId}`);
    }
  }
}
