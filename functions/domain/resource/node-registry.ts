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
import { decodeListCursor, encodeListCursor, malformedCursor } from '../list-cursor.js';
import { updateWithRetry } from '../records.js';
import type { JoinTokens } from './join-tokens.js';
import {
  isLive,
  type NodeRecord,
  type NodeStats,
  newNodeRecord,
  nodeKey,
  nodeListPks,
  putNode,
} from './node-record.js';
import { PoolSummaries } from './pool-summary.js';
import { poolInScope, poolsOf, type RegionPolicy, regionAllowed } from './pools.js';
import { type PresenceRecord, Presences } from './presence.js';

export interface NodeRegistrySettings {
  /** A node that has not been seen for this long is unavailable. */
  livenessMs: number;
  /** `token`: a node's first registration needs a join token; `open`: anyone may register. */
  enrollment: Enrollment;
  /** A node unseen for this long is removed (its item expires) and must enroll again. */
  nodeExpiryMs: number;
  /** The regions nodes may report. */
  regions: RegionPolicy;
  /** This process is the store's only writer (embedded): presence writes skip their read (presence.ts). */
  exclusiveStore?: boolean;
}

const registerAttempts = 8;

/**
 * The node registry: enrollment and registration (idempotent per public key), liveness, expiry
 * and listing. When a node was last seen is its presence item's (presence.ts): a heartbeat writes
 * that small item, never the node item, so a node that stops heartbeating reads as unavailable
 * without any write, and the reaper's {@link NodeRegistry.sweepDead} takes it out of its pools'
 * summaries. A node unseen for `nodeExpiryMs` disappears with its items' TTL.
 *
 * A node's first registration enrolls it: it must present a join token (unless enrollment is
 * open), whose operator becomes the node's and whose pool scope binds the node's pools from then
 * on. A node already registered re-registers (an agent restart) with its key alone.
 */
export class NodeRegistry {
  private readonly presences: Presences;
  /** Used only to make a node's pools known before it is first counted in them. */
  private readonly summaries: PoolSummaries;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    readonly settings: NodeRegistrySettings,
    private readonly joinTokens?: JoinTokens,
  ) {
    this.summaries = new PoolSummaries(store, clock);
    this.presences = new Presences(
      store,
      clock,
      {
        livenessMs: settings.livenessMs,
        nodeExpiryMs: settings.nodeExpiryMs,
        ...(settings.exclusiveStore === undefined ? {} : { exclusiveStore: settings.exclusiveStore }),
      },
      (pool) => this.summaries.ensurePool(pool),
    );
  }

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
    let ensured = false;
    for (let round = 0; round < registerAttempts; round++) {
      const now = this.clock.now();
      const expiresAt = now + this.settings.nodeExpiryMs;
      const [current, presence] = await Promise.all([
        this.store.get<NodeRecord>(nodeKey(id)),
        this.presences.readForRegistration(id),
      ]);
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
      if (!ensured) {
        await Promise.all(pools.map((pool) => this.summaries.ensurePool(pool)));
        ensured = true;
      }
      // A registration is a sign of life: the node is live and counted in its pools from now.
      const seen = this.presences.planRegistration(planned.node, presence, now);
      try {
        await this.store.transact([...planned.writes, ...seen.writes]);
        this.presences.registered(seen.next);
        return { node: planned.node, created: planned.created };
      } catch (error) {
        this.presences.forget(id);
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

  /** The node with when it was last seen (its presence's time): what an operator is shown. */
  async describe(id: string): Promise<NodeRecord> {
    const [node, presence] = await Promise.all([this.get(id), this.presences.get(id)]);
    return withPresence(node, presence);
  }

  /**
   * Records that the node was seen now: one write to its presence item (presence.ts), with no read
   * where the store is exclusive. A heartbeat passes its signed date (`hbDate`), which must be later
   * than the last heartbeat's; other signs of life write at most once a second.
   *
   * @throws NotFoundError `node_not_found`; UnauthenticatedError `replayed_request` (a heartbeat's date).
   */
  async touch(id: string, options: { hbDate?: number } = {}): Promise<void> {
    await this.presences.seen(id, options);
  }

  /**
   * Turns up to `limit` live nodes unseen for the liveness window dead, taking them out of their
   * pools' summaries; returns how many. The reaper calls it every tick.
   */
  sweepDead(now: number, limit: number): Promise<number> {
    return this.presences.sweepDead(now, limit);
  }

  async bumpStats(id: string, field: keyof NodeStats): Promise<void> {
    await updateWithRetry<NodeRecord, null>(this.store, nodeKey(id), (current) => {
      if (current === undefined) return undefined;
      const node = { ...current.data, stats: { ...current.data.stats, [field]: current.data.stats[field] + 1 } };
      return { writes: [putNode(node, current.version)], result: null };
    });
  }

  /**
   * A page of nodes, with when each was last seen. The list is sharded (`NODES#<nn>`), so pages run
   * shard by shard, oldest registration first within a shard; the cursor names the shard and the
   * position in it. A page reads its presences too (one GetItem each, at once). `filter` names the
   * filter the caller applies to each page (the route's `?status`): the cursor carries it, so it
   * resumes only a list with the same one.
   *
   * @throws InvalidRequestError `invalid_cursor` for a cursor not made by this list with this filter.
   */
  async list(limit: number, cursor?: string, filter?: string): Promise<{ nodes: NodeRecord[]; cursor?: string }> {
    let { part, inPart } = decodeNodeCursor(cursor, filter);
    const nodes: NodeRecord[] = [];
    while (part < nodeListPks.length && nodes.length < limit) {
      const page = await this.store.query<NodeRecord>({
        index: 'byOwner',
        pk: nodeListPks[part] as string,
        limit: limit - nodes.length,
        ...(inPart === undefined ? {} : { cursor: inPart }),
      });
      nodes.push(...page.items.map((i) => i.data));
      inPart = page.cursor;
      if (inPart === undefined) part++;
    }
    // A full page that ended its shard looks for the next shard holding a node (the query the next
    // page would start with), so the last page has no cursor, as the store's own last pages do.
    while (inPart === undefined && part < nodeListPks.length) {
      const ahead = await this.store.query<NodeRecord>({ index: 'byOwner', pk: nodeListPks[part] as string, limit: 1 });
      if (ahead.items.length > 0) break;
      part++;
    }
    const presences = await Promise.all(nodes.map((node) => this.presences.get(node.id)));
    const seen = nodes.map((node, i) => withPresence(node, presences[i]));
    const next = part < nodeListPks.length ? encodeListCursor('nodes', '', filter, [part, inPart ?? '']) : undefined;
    return { nodes: seen, ...(next === undefined ? {} : { cursor: next }) };
  }

  /** Every live node: a scan of the whole list, for small fleets and tests; routing reads pool summaries. */
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

/** The node as last seen: its presence's `lastSeenAt` when that is later than the item's. */
function withPresence(node: NodeRecord, presence: PresenceRecord | undefined): NodeRecord {
  return presence === undefined || presence.lastSeenAt <= node.lastSeenAt
    ? node
    : { ...node, lastSeenAt: presence.lastSeenAt };
}

/** The node list's position: the shard, and the store's cursor in it ('' at its start). */
function decodeNodeCursor(cursor: string | undefined, filter: string | undefined): { part: number; inPart?: string } {
  if (cursor === undefined) return { part: 0 };
  const [part, inPart, ...rest] = decodeListCursor(cursor, 'nodes', '', filter);
  const valid =
    Number.isInteger(part) &&
    (part as number) >= 0 &&
    (part as number) < nodeListPks.length &&
    typeof inPart === 'string' &&
    rest.length === 0;
  if (!valid) throw malformedCursor(cursor);
  return inPart === '' ? { part: part as number } : { part: part as number, inPart };
}
