import { nodeIdFromPublicKey, type RegisterNodeRequest } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Store } from '../../ports/store.js';
import { NotFoundError } from '../errors.js';
import { updateWithRetry } from '../records.js';
import { isLive, type NodeRecord, type NodeStats, newNodeRecord, nodeKey, nodeListPk, putNode } from './node-record.js';
import { poolsOf } from './pools.js';

export interface LivenessSettings {
  /** A node that has not been seen for this long is unavailable. */
  livenessMs: number;
}

/**
 * The node registry: registration (idempotent per public key), liveness and listing.
 * Liveness is derived from `lastSeenAt`, so a node that stops heartbeating becomes unavailable
 * without any write.
 */
export class NodeRegistry {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    readonly settings: LivenessSettings,
  ) {}

  /** Registers a node, or updates the inventory of the node that holds this key. */
  async register(req: RegisterNodeRequest): Promise<{ node: NodeRecord; created: boolean }> {
    const id = nodeIdFromPublicKey(req.publicKey);
    const outcome = await updateWithRetry<NodeRecord, { node: NodeRecord; created: boolean }>(
      this.store,
      nodeKey(id),
      (current) => {
        const now = this.clock.now();
        if (current === undefined) {
          const node = newNodeRecord(id, req, now);
          return { writes: [putNode(node, 0)], result: { node, created: true } };
        }
        const node: NodeRecord = {
          ...current.data,
          name: req.name ?? current.data.name,
          agentVersion: req.agentVersion,
          inventory: req.inventory,
          pools: poolsOf(req.inventory),
          lastSeenAt: now,
        };
        return { writes: [putNode(node, current.version)], result: { node, created: false } };
      },
    );
    // updateWithRetry only returns undefined when the change function does, which it never does here.
    return outcome as { node: NodeRecord; created: boolean };
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
      const node = { ...current.data, lastSeenAt: now };
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
