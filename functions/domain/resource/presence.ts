/**
 * Node presence: when each node was last seen, kept apart from the node item so that a heartbeat
 * is one small conditional write (docs/cost-model.md section 9).
 *
 * | item                   | written                              | index                                   |
 * | ---------------------- | ------------------------------------ | --------------------------------------- |
 * | `NODE#<id>` / `SEEN`   | every heartbeat; polls at most 1/s   | none                                    |
 * | `NODE#<id>` / `DUE`    | when the node's live-until bucket moves, or it turns live or dead | byDue `DUE#presence#<nn>` / `<bucket end>#<id>` |
 * | `NODE#<id>` / `NODE`   | registration, claims, stats; by presence only to push its expiry, about once a day | byOwner `NODES#<nn>` |
 *
 * A node is live from its registration or first sign of life until the reaper's
 * {@link Presences.sweepDead} finds it unseen for the liveness window. Turning live adds what the
 * node offers ({@link nodeCapacityFields}) to each of its pools' summaries, in the same transaction;
 * turning dead subtracts exactly what was added (kept in `counted`), so the summaries stay true
 * without a scan. The due item sits in the bucket that its live-until time rounds up to, so a node
 * beating every 30 s with a 90 s liveness moves it on one beat in three, and the sweep reads only
 * nodes whose bucket has passed.
 *
 * Replays: a heartbeat carries its signed `x-gpuai-date`, which must be later than the last one
 * taken (`hbDate`); a replayed or reordered heartbeat fails that check and writes nothing, so the
 * heartbeat route keeps no nonce item (protocol/signing.ts).
 *
 * Cost: where this process is the store's only writer (embedded) it remembers what it wrote and a
 * heartbeat is one write with no read. Where instances share the store (Lambda) a heartbeat that
 * changes nothing but when the node was seen is one conditional `update` of the item's number
 * fields (`hbDate`, `lastSeenAt`, `dueAt`, `nodeExpiresAt`), whose condition carries the replay
 * check and "nothing else to do" ({@link Presences.seen}); only a beat that must move the due item,
 * turn the node live or push its expiry reads the item first and writes a transaction.
 *
 * @module
 */
import type { Clock } from '../../ports/clock.js';
import { ConditionFailedError, type ItemKey, type Store, type StoredItem, type Write } from '../../ports/store.js';
import { ContentionError, NotFoundError, UnauthenticatedError } from '../errors.js';
import { sortableTime } from '../records.js';
import { retrying, retryPolicies } from '../retry.js';
import { allShardPks, shardedPk } from '../shards.js';
import { type NodeRecord, nodeKey, putNode } from './node-record.js';
import { nodeCapacityFields, poolDelta } from './pool-summary.js';

/** What each pool's summary counts for one live node: pool -> field -> amount. */
export type CountedCapacity = Record<string, Record<string, number>>;

/** `NODE#<id>` / `SEEN`. */
export interface PresenceRecord {
  nodeId: string;
  lastSeenAt: number;
  /** The signed date of the latest heartbeat taken: the next must carry a later one. */
  hbDate?: number;
  /** Counted in its pools' summaries: set when it turns live, cleared by the sweep that finds it dead. */
  live: boolean;
  pools: string[];
  /** What turning live added to each pool's summary; turning dead subtracts exactly this. Empty when not live. */
  counted: CountedCapacity;
  /** The end of the bucket its due item sits in; absent when it has none (not live). */
  dueAt?: number;
  /** The due item's version: 0 when there is none. */
  dueVersion: number;
  /** When the node item expires (its TTL); presence pushes it forward about once a seventh of the expiry. */
  nodeExpiresAt: number;
}

/** The due item, `NODE#<id>` / `DUE`: only its byDue key matters. */
interface PresenceDue {
  nodeId: string;
  dueAt: number;
}

export interface PresenceSettings {
  livenessMs: number;
  nodeExpiryMs: number;
  /** Due buckets are this wide (default: the liveness window): wider moves the due item less often, and finds dead nodes later. */
  bucketMs?: number;
  /** This process is the store's only writer: trust the versions it wrote last and skip the read. */
  exclusiveStore?: boolean;
  /**
   * The longest regular gap between a node's heartbeats (default: a third of the liveness window,
   * the idle interval). A beat within this of a due bucket boundary may have to move the due item,
   * so it reads first instead of trying the one-write update and failing.
   */
  beatEveryMs?: number;
}

export const presenceKey = (nodeId: string): ItemKey => ({ pk: `NODE#${nodeId}`, sk: 'SEEN' });
export const presenceDueKey = (nodeId: string): ItemKey => ({ pk: `NODE#${nodeId}`, sk: 'DUE' });
export const presenceDuePrefix = 'DUE#presence';

/** Polls (and other signs of life without a signed date) write presence at most this often. */
const pollWriteEveryMs = 1000;
/** Presence entries remembered by an exclusive store's cache; beyond this the oldest are forgotten (and read again). */
const maxCachedPresences = 200_000;

/** The end of the bucket that `lastSeenAt + livenessMs` falls in: the due item's time. */
export function dueBucket(lastSeenAt: number, livenessMs: number, bucketMs: number): number {
  return Math.ceil((lastSeenAt + livenessMs) / bucketMs) * bucketMs;
}

/** What `node` adds to each of its pools' summaries while it is live. */
export function capacityOf(node: NodeRecord): CountedCapacity {
  return Object.fromEntries(node.pools.map((pool) => [pool, nodeCapacityFields(node, pool)]));
}

/** The summary writes that turn `before` into `after` (each an `add` on the node's shard of the pool). */
export function countedDelta(nodeId: string, before: CountedCapacity, after: CountedCapacity): Write[] {
  const writes: Write[] = [];
  for (const pool of new Set([...Object.keys(before), ...Object.keys(after)])) {
    const was = before[pool] ?? {};
    const now = after[pool] ?? {};
    const fields: Record<string, number> = {};
    for (const field of new Set([...Object.keys(was), ...Object.keys(now)])) {
      const change = (now[field] ?? 0) - (was[field] ?? 0);
      if (change !== 0) fields[field] = change;
    }
    if (Object.keys(fields).length > 0) writes.push(poolDelta(pool, nodeId, fields));
  }
  return writes;
}

export function putPresence(presence: PresenceRecord, expectVersion: number, expiresAtMs: number): Write {
  return {
    kind: 'put',
    key: presenceKey(presence.nodeId),
    data: presence,
    expiresAt: Math.ceil(expiresAtMs / 1000),
    expectVersion,
    numbers: presenceNumbers(presence),
  };
}

/**
 * The presence's number fields: what a heartbeat's update compares and sets without a read. `dueAt`
 * is one only while the node is live, so "has a due time far enough ahead" also says "is live".
 */
function presenceNumbers(presence: PresenceRecord): Record<string, number> {
  return {
    lastSeenAt: presence.lastSeenAt,
    nodeExpiresAt: presence.nodeExpiresAt,
    ...(presence.hbDate === undefined ? {} : { hbDate: presence.hbDate }),
    ...(presence.live && presence.dueAt !== undefined ? { dueAt: presence.dueAt } : {}),
  };
}

function putDue(nodeId: string, dueAt: number, expectVersion: number, expiresAtMs: number): Write {
  const data: PresenceDue = { nodeId, dueAt };
  return {
    kind: 'put',
    key: presenceDueKey(nodeId),
    data,
    indexes: { byDue: { pk: shardedPk(presenceDuePrefix, nodeId), sk: `${sortableTime(dueAt)}#${nodeId}` } },
    expiresAt: Math.ceil(expiresAtMs / 1000),
    expectVersion,
  };
}

/** The presence of a node that has none yet: not live, counted nowhere. */
function unseen(node: NodeRecord, defaultExpiresAt: number): PresenceRecord {
  return {
    nodeId: node.id,
    lastSeenAt: node.lastSeenAt,
    live: false,
    pools: node.pools,
    counted: {},
    dueVersion: 0,
    nodeExpiresAt: node.expiresAt ?? defaultExpiresAt,
  };
}

/** A presence write refused because its signed date is not later than the last heartbeat's. */
export class ReplayedHeartbeatError extends UnauthenticatedError {
  override name = 'ReplayedHeartbeatError';
  constructor(date: number, last: number) {
    super(
      'replayed_request',
      `heartbeat date ${date} is not later than the last heartbeat taken (${last}): replayed or reordered`,
      // The watermark itself: a node that restarted (and lost its last date) signs above it at once
      // instead of being refused until its clock passes a date it once signed ahead (edge-agent/client.ts).
      { lastDate: last },
    );
  }
}

/**
 * Presence reads and writes. `loadNode` reads the node item, which presence needs only when a node
 * turns live (its capacity) or its item's expiry is due to be pushed.
 */
export class Presences {
  private readonly cache = new Map<string, StoredItem<PresenceRecord>>();
  private readonly bucketMs: number;
  private readonly beatEveryMs: number;
  /** The node item's TTL is pushed once less than this is left of it: a seventh of the expiry has passed. */
  private readonly refreshAfterMs: number;

  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    private readonly settings: PresenceSettings,
    /** Makes a pool known to the summaries' readers before a node is first counted in it (PoolSummaries.ensurePool). */
    private readonly ensurePool: (pool: string) => Promise<void> = async () => {},
  ) {
    this.bucketMs = Math.max(1000, settings.bucketMs ?? settings.livenessMs);
    this.beatEveryMs = settings.beatEveryMs ?? settings.livenessMs / 3;
    this.refreshAfterMs = settings.nodeExpiryMs - settings.nodeExpiryMs / 7;
  }

  async get(nodeId: string): Promise<PresenceRecord | undefined> {
    return (await this.store.get<PresenceRecord>(presenceKey(nodeId)))?.data;
  }

  /**
   * Records a sign of life. With `hbDate` (a heartbeat) it always writes, and refuses a date not
   * later than the last heartbeat's ({@link ReplayedHeartbeatError}); without (a poll, a claim) it
   * skips the write when the node was seen within the last second and is live.
   *
   * A heartbeat where instances share the store first tries {@link Presences.beatInPlace}: one
   * write, no read. Only when its condition fails (a replay, or something else to write) does it
   * read the presence and plan the writes, which then refuse the replay with the watermark it read.
   *
   * @throws NotFoundError `node_not_found` when the node is not registered (or its item expired).
   * @throws ContentionError when other writes of the same presence kept winning.
   */
  async seen(nodeId: string, options: { hbDate?: number } = {}): Promise<void> {
    if (options.hbDate !== undefined && this.settings.exclusiveStore !== true) {
      if (await this.beatInPlace(nodeId, options.hbDate)) return;
    }
    await retrying(
      async () => {
        const current = this.cached(nodeId) ?? (await this.read(nodeId));
        const planned = await this.planSeen(nodeId, current, options.hbDate);
        if (planned === undefined) return;
        try {
          await this.store.transact(planned.writes);
        } catch (error) {
          this.cache.delete(nodeId);
          throw error;
        }
        this.remember(nodeId, planned.next);
      },
      {
        policy: retryPolicies.staleRead,
        retryOn: (error) => error instanceof ConditionFailedError,
        giveUp: (cause, attempts) =>
          new ContentionError(`gave up recording node ${nodeId} as seen after ${attempts} conflicting writes`, {
            cause,
          }),
      },
    );
  }

  /**
   * A heartbeat as one conditional update of the presence's number fields: `hbDate` and
   * `lastSeenAt` set, if the date is later than the watermark (the replay check rides on the write),
   * the node's due item is at or past where this beat would put it (so the node is live and the
   * due item stays), and its node item's expiry is not yet due to be pushed. Exactly the case in
   * which {@link Presences.planSeen} writes the presence item alone. False when the condition
   * failed, having written nothing; near a due bucket boundary, where the due item may have to
   * move, it does not try (a failed conditional write costs as much as one that succeeds).
   */
  private async beatInPlace(nodeId: string, hbDate: number): Promise<boolean> {
    const now = this.clock.now();
    const { livenessMs } = this.settings;
    if (dueBucket(now - this.beatEveryMs, livenessMs, this.bucketMs) !== dueBucket(now, livenessMs, this.bucketMs)) {
      return false;
    }
    try {
      await this.store.transact([
        {
          kind: 'update',
          key: presenceKey(nodeId),
          set: { lastSeenAt: now, hbDate },
          when: {
            hbDate: { below: hbDate },
            dueAt: { atLeast: now + livenessMs },
            nodeExpiresAt: { atLeast: now + this.refreshAfterMs },
          },
        },
      ]);
      return true;
    } catch (error) {
      if (error instanceof ConditionFailedError) return false;
      throw error;
    }
  }

  /**
   * The presence writes of a registration, to go in its transaction: the node is seen now and live,
   * its summaries count `node` as registered (what an earlier registration counted is taken back).
   */
  planRegistration(
    node: NodeRecord,
    current: StoredItem<PresenceRecord> | undefined,
    now: number,
  ): { writes: Write[]; next: StoredItem<PresenceRecord> } {
    const before = current?.data;
    const counted = capacityOf(node);
    const dueAt = dueBucket(now, this.settings.livenessMs, this.bucketMs);
    const expiresAt = node.expiresAt ?? now + this.settings.nodeExpiryMs;
    const dueVersion = before?.dueVersion ?? 0;
    const moveDue = before?.dueAt !== dueAt;
    const presence: PresenceRecord = {
      nodeId: node.id,
      lastSeenAt: now,
      ...(before?.hbDate === undefined ? {} : { hbDate: before.hbDate }),
      live: true,
      pools: node.pools,
      counted,
      dueAt,
      dueVersion: moveDue ? dueVersion + 1 : dueVersion,
      nodeExpiresAt: expiresAt,
    };
    const version = current?.version ?? 0;
    const writes = [
      putPresence(presence, version, expiresAt),
      ...(moveDue ? [putDue(node.id, dueAt, dueVersion, expiresAt)] : []),
      ...countedDelta(node.id, before?.live === true ? before.counted : {}, counted),
    ];
    return { writes, next: { ...presenceKey(node.id), version: version + 1, data: presence, indexes: {} } };
  }

  /** The presence as read for a registration (fresh from the store: a registration is rare). */
  async readForRegistration(nodeId: string): Promise<StoredItem<PresenceRecord> | undefined> {
    return this.store.get<PresenceRecord>(presenceKey(nodeId));
  }

  /** After a registration's transaction: remember what it wrote. */
  registered(next: StoredItem<PresenceRecord>): void {
    this.remember(next.data.nodeId, next);
  }

  /** After a failed registration transaction: what was remembered may be stale. */
  forget(nodeId: string): void {
    this.cache.delete(nodeId);
  }

  /**
   * Turns live nodes unseen for the liveness window dead, oldest bucket first, shard by shard, and
   * subtracts them from their pools' summaries; at most `limit` of them. Returns how many it turned.
   * What it leaves (a full budget) is still due and found by the next call.
   */
  async sweepDead(now: number, limit: number): Promise<number> {
    let turned = 0;
    for (const pk of allShardPks(presenceDuePrefix)) {
      let cursor: string | undefined;
      do {
        if (turned >= limit) return turned;
        const page = await this.store.query<PresenceDue>({
          index: 'byDue',
          pk,
          skBefore: sortableTime(now),
          limit: Math.min(100, Math.max(1, limit - turned)),
          ...(cursor === undefined ? {} : { cursor }),
        });
        for (const due of page.items) {
          if (turned >= limit) return turned;
          if (await this.expire(due, now)) turned++;
        }
        cursor = page.cursor;
      } while (cursor !== undefined);
    }
    return turned;
  }

  /** Turns one due node dead if it really is (the index may lag a heartbeat that moved it); drops a stale due item. */
  private async expire(due: StoredItem<PresenceDue>, now: number): Promise<boolean> {
    const nodeId = due.data.nodeId;
    const current = await this.read(nodeId);
    const presence = current?.data;
    try {
      if (current === undefined || presence === undefined || !presence.live) {
        // Nobody counts on it: the due item outlived its presence.
        await this.store.transact([{ kind: 'delete', key: presenceDueKey(nodeId), expectVersion: due.version }]);
        return false;
      }
      if (now - presence.lastSeenAt <= this.settings.livenessMs) return false;
      const dead: PresenceRecord = { ...presence, live: false, counted: {}, dueVersion: 0 };
      delete dead.dueAt;
      const writes: Write[] = [
        putPresence(dead, current.version, presence.nodeExpiresAt),
        { kind: 'delete', key: presenceDueKey(nodeId), expectVersion: presence.dueVersion },
        ...countedDelta(nodeId, presence.counted, {}),
      ];
      await this.store.transact(writes);
      this.remember(nodeId, { ...current, version: current.version + 1, data: dead });
      return true;
    } catch (error) {
      // A heartbeat got there first: the node is alive, and its due item moved on.
      if (error instanceof ConditionFailedError) {
        this.cache.delete(nodeId);
        return false;
      }
      throw error;
    }
  }

  private async planSeen(
    nodeId: string,
    current: StoredItem<PresenceRecord> | undefined,
    hbDate: number | undefined,
  ): Promise<{ writes: Write[]; next: StoredItem<PresenceRecord> } | undefined> {
    const now = this.clock.now();
    let node: StoredItem<NodeRecord> | undefined;
    const loadNode = async (): Promise<StoredItem<NodeRecord>> => {
      node ??= await this.store.get<NodeRecord>(nodeKey(nodeId));
      if (node === undefined) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
      return node;
    };
    // A node registered before presence items existed gets one now, not yet counted as live.
    const before: PresenceRecord = current?.data ?? unseen((await loadNode()).data, now + this.settings.nodeExpiryMs);
    if (now >= before.nodeExpiresAt) throw new NotFoundError('node_not_found', `no node ${nodeId}`);
    if (hbDate !== undefined && before.hbDate !== undefined && hbDate <= before.hbDate) {
      throw new ReplayedHeartbeatError(hbDate, before.hbDate);
    }
    if (hbDate === undefined && before.live && now - before.lastSeenAt < pollWriteEveryMs) return undefined;

    const next: PresenceRecord = {
      ...before,
      lastSeenAt: now,
      ...(hbDate === undefined ? {} : { hbDate }),
      live: true,
    };
    const writes: Write[] = [];
    if (!before.live) {
      const { data } = await loadNode();
      await Promise.all(data.pools.map((pool) => this.ensurePool(pool)));
      next.pools = data.pools;
      next.counted = capacityOf(data);
      writes.push(...countedDelta(nodeId, {}, next.counted));
    }
    // The node item's TTL: pushed when a seventh of the expiry has passed since it last was.
    if (before.nodeExpiresAt - now < this.refreshAfterMs) {
      const item = await loadNode();
      next.nodeExpiresAt = now + this.settings.nodeExpiryMs;
      writes.push(putNode({ ...item.data, lastSeenAt: now, expiresAt: next.nodeExpiresAt }, item.version));
    }
    const dueAt = dueBucket(now, this.settings.livenessMs, this.bucketMs);
    if (before.dueAt !== dueAt) {
      writes.push(putDue(nodeId, dueAt, before.dueVersion, next.nodeExpiresAt));
      next.dueAt = dueAt;
      next.dueVersion = before.dueVersion + 1;
    }
    const version = current?.version ?? 0;
    writes.unshift(putPresence(next, version, next.nodeExpiresAt));
    return { writes, next: { ...presenceKey(nodeId), version: version + 1, data: next, indexes: {} } };
  }

  private async read(nodeId: string): Promise<StoredItem<PresenceRecord> | undefined> {
    return this.store.get<PresenceRecord>(presenceKey(nodeId));
  }

  private cached(nodeId: string): StoredItem<PresenceRecord> | undefined {
    return this.settings.exclusiveStore === true ? this.cache.get(nodeId) : undefined;
  }

  private remember(nodeId: string, item: StoredItem<PresenceRecord>): void {
    if (this.settings.exclusiveStore !== true) return;
    this.cache.delete(nodeId);
    this.cache.set(nodeId, item);
    if (this.cache.size > maxCachedPresences) {
      const oldest = this.cache.keys().next().value;
      if (oldest !== undefined) this.cache.delete(oldest);
    }
  }
}
