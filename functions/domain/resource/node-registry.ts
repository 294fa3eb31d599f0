import {
  anonymousOperator,
  type Enrollment,
  nodeIdFromPublicKey,
  type RegisterNodeRequest,
} from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import { ConditionFailedError, type Store, type Write } from '../../ports/store.js';
import {
  ContentionError,
  ForbiddenError,
  InvalidRequestError,
  NotFoundError,
  UnauthenticatedError,
} from '../errors.js';
import { updateWithRetry } from '../records.js';
import type { JoinTokens } from './join-tokens.js';
import { isLive, type NodeRecord, type NodeStats, newNodeRecord, nodeKey, nodeListPk, putNode } from './node-record.js';
import { poolInScope, poolsOf, type RegionPolicy, regionAllowed } from './pools.js';

export interface NodeRegistrySettings {
  /** A node that has not been seen for this long is unavailable. */
  livenessMs: number;
  /** `token`: a node's first registration needs a join token; `open`: anyone may register. */
  enrollment: Enrollment;
  /** A node unseen for this long is removed (its item expires) and must enroll again. */
  nodeExpiryMs: number;
  /** The regions nodes may report. */
  regions: RegionPolicy;
}

const registerAttempts = 8;

/**
 * The node registry: enrollment and registration (idempotent per public key), liveness, expiry
 * and listing. Liveness is derived from `lastSeenAt`, so a node that stops heartbeating becomes
 * unavailable without any write; a node unseen for `nodeExpiryMs` disappears with its item's TTL.
 *
 * A node's first registration enrolls it: it must present a join token (unless enrollment is
 * open), whose operator becomes the node's and whose pool scope binds the node's pools from then
 * on. A node already registered re-registers (an agent restart) with its key alone.
 */
export class NodeRegistry {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    readonly settings: NodeRegistrySettings,
    private readonly joinTokens?: JoinTokens,
  ) {}

  /**
   * Registers a node, or updates the inventory of the node that holds this key. Nothing is
   * written unless the registration is admitted.
   *
   * @throws InvalidRequestError `region_not_allowed`.
   * @throws UnauthenticatedError `join_token_required` or a join token refusal (see JoinTokens.admit).
   * @throws ForbiddenError `pool_not_in_token_scope`.
   */
  async register(req: RegisterNodeRequest): Promise<{ node: NodeRecord; created: boolean }> {
    const id = nodeIdFromPublicKey(req.publicKey);
    if (!regionAllowed(req.inventory.region, this.settings.regions)) {
      throw new InvalidRequestError(
        'region_not_allowed',
        `region '${req.inventory.region}' is not one this control plane serves`,
        this.settings.regions === '*' ? undefined : { allowed: this.settings.regions },
      );
    }
    const pools = poolsOf(req.inventory);
    for (let round = 0; round < registerAttempts; round++) {
      const now = this.clock.now();
      const expiresAt = now + this.settings.nodeExpiryMs;
      const current = await this.store.get<NodeRecord>(nodeKey(id));
      let planned: { writes: Write[]; node: NodeRecord; created: boolean };
      if (current !== undefined) {
        const scope = current.data.enrollment?.pools;
        const outside = pools.filter((pool) => !poolInScope(pool, scope));
        if (outside.length > 0) {
          throw new ForbiddenError(
            'pool_not_in_token_scope',
            `node ${id} enrolled for ${scope?.join(', ')} only, not ${outside.join(', ')}`,
          );
        }
        const { sealingKey: _previousSealingKey, ...kept } = current.data;
        const node: NodeRecord = {
          ...kept,
          // The key of the latest signed registration: an agent that lost its sealing key registers a new one.
          ...(req.sealingKey === undefined ? {} : { sealingKey: req.sealingKey }),
          name: req.name ?? current.data.name,
          agentVersion: req.agentVersion,
          inventory: req.inventory,
          pools,
          lastSeenAt: now,
          expiresAt,
        };
        // An attestation measured one agent version: another version starts from none until it attests.
        if (node.agentVersion !== current.data.agentVersion) delete node.attestation;
        planned = { writes: [putNode(node, current.version)], node, created: false };
      } else {
        const writes: Write[] = [];
        let enrolled: Pick<NodeRecord, 'operator' | 'enrollment' | 'expiresAt'>;
        if (req.joinToken !== undefined) {
          // A token presented is checked even under open enrollment: a bad one is never ignored.
          if (this.joinTokens === undefined)
            throw new UnauthenticatedError('invalid_join_token', 'join tokens are not accepted here');
          const { token, consume } = await this.joinTokens.admit(req.joinToken, pools, now);
          writes.push(consume);
          enrolled = {
            operator: token.operator,
            enrollment: { tokenId: token.id, ...(token.pools === undefined ? {} : { pools: token.pools }) },
            expiresAt,
          };
        } else if (this.settings.enrollment === 'open') {
          enrolled = { operator: anonymousOperator, expiresAt };
        } else {
          throw new UnauthenticatedError(
            'join_token_required',
            'this control plane admits new nodes only with a join token (gpuai tokens create; gpuai-agent run --join-token)',
          );
        }
        const node = newNodeRecord(id, req, now, enrolled);
        planned = { writes: [putNode(node, 0), ...writes], node, created: true };
      }
      try {
        await this.store.transact(planned.writes);
        return { node: planned.node, created: planned.created };
      } catch (error) {
        // Another registration of this key, or another use of the token, got there first: re-read both.
        if (!(error instanceof ConditionFailedError)) throw error;
      }
    }
    throw new ContentionError(`gave up registering node ${id} after ${registerAttempts} conflicting writes`);
  }

  async get(id: string): Promise<NodeRecord> {
    const item = await this.store.get<NodeRecord>(nodeKey(id));
    if (item === undefined) throw new NotFoundError('node_not_found', `no node ${id}`);
    return item.data;
  }

  async find(id: string): Promise<NodeRecord | undefined> {
    return (await this.store.get<NodeRecord>(nodeKey(id)))?.data;
  }

  /** Records that the node was seen now; skips the write when it was seen within the last second. */
  async touch(id: string): Promise<NodeRecord> {
    const updated = await updateWithRetry<NodeRecord, NodeRecord>(this.store, nodeKey(id), (current) => {
      if (current === undefined) throw new NotFoundError('node_not_found', `no node ${id}`);
      const now = this.clock.now();
      if (now - current.data.lastSeenAt < 1000) return undefined;
      const node = { ...current.data, lastSeenAt: now, expiresAt: now + this.settings.nodeExpiryMs };
      return { writes: [putNode(node, current.version)], result: node };
    });
    return updated ?? this.get(id);
  }

  async bumpStats(id: string, field: keyof NodeStats): Promise<void> {
    await updateWithRetry<NodeRecord, null>(this.store, nodeKey(id), (current) => {
      if (current === undefined) return undefined;
      const node = { ...current.data, stats: { ...current.data.stats, [field]: current.data.stats[field] + 1 } };
      return { writes: [putNode(node, current.version)], result: null };
    });
  }

  async list(limit: number, cursor?: string): Promise<{ nodes: NodeRecord[]; cursor?: string }> {
    const page = await this.store.query<NodeRecord>({
      index: 'byOwner',
      pk: nodeListPk,
      limit,
      ...(cursor === undefined ? {} : { cursor }),
    });
    return { nodes: page.items.map((i) => i.data), ...(page.cursor === undefined ? {} : { cursor: page.cursor }) };
  }

  /** Every live node. Placement reads this; at scale it becomes a per-pool capacity view. */
  async liveNodes(): Promise<NodeRecord[]> {
    const now = this.clock.now();
    const live: NodeRecord[] = [];
    let cursor: string | undefined;
    do {
      const page = await this.list(500, cursor);
      for (const node of page.nodes) if (isLive(node, now, this.settings.livenessMs)) live.push(node);
      cursor = page.cursor;
    } while (cursor !== undefined);
    return live;
  }
}
