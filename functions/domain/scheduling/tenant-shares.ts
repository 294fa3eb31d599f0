import type { StoredItem } from '../../ports/store.js';
import { priorityOf, type TaskRecord } from './task-record.js';

/** How fast a tenant's recent dispatches are forgotten: after this long they weigh half. */
const halfLifeMs = 10 * 60_000;
/** Tenants remembered at most; beyond, the one with the least recent work is forgotten first. */
const maxTenants = 10_000;

/**
 * Fair share between tenants at dispatch: each tenant's recent work (units handed out, GPUs or 1
 * for a CPU task, decayed with a half-life) is its share, and among the queued tasks a poll reads,
 * the lowest share goes first, then that tenant's highest priority, then its oldest task. So a
 * tenant that queued a thousand tasks, at whatever priority, does not hold back one that queued two
 * behind them, within the window a poll reads (a page of `scanLimit`, read on while one tenant
 * fills it, and more when the node fits none of it: see the dispatcher's `queued`).
 *
 * The shares live in this process: in the embedded deployment that is the whole control plane;
 * in the cloud each API instance keeps its own, which still alternates tenants per instance.
 */
export class TenantShares {
  readonly #usage = new Map<string, { units: number; at: number }>();

  /** `units` handed to `tenant` at `now`. */
  record(tenant: string | undefined, units: number, now: number): void {
    const key = tenant ?? '';
    this.#usage.set(key, { units: this.share(key, now) + units, at: now });
    if (this.#usage.size > maxTenants) this.#forgetLeast(now);
  }

  /** The tenant's recent work at `now`, decayed. */
  share(tenant: string | undefined, now: number): number {
    const used = this.#usage.get(tenant ?? '');
    if (used === undefined) return 0;
    return used.units * 0.5 ** (Math.max(0, now - used.at) / halfLifeMs);
  }

  /**
   * The order to offer `items` in: tenant share (least first), then priority (highest first), then
   * as given (oldest first). Share comes first so that priority orders a tenant's own work and can
   * never starve another tenant: a flood at priority 9 gets one task per slot ahead of another
   * tenant's default job at most, not the whole flood.
   */
  order(items: readonly StoredItem<TaskRecord>[], now: number): StoredItem<TaskRecord>[] {
    const keyed = items.map((item, at) => ({
      item,
      at,
      priority: priorityOf(item.data),
      share: this.share(item.data.tenant, now),
    }));
    keyed.sort((a, b) => a.share - b.share || b.priority - a.priority || a.at - b.at);
    return keyed.map((k) => k.item);
  }

  #forgetLeast(now: number): void {
    let least: { tenant: string; share: number } | undefined;
    for (const tenant of this.#usage.keys()) {
      const share = this.share(tenant, now);
      if (least === undefined || share < least.share) least = { tenant, share };
    }
    if (least !== undefined) this.#usage.delete(least.tenant);
  }
}

/** What a task weighs in its tenant's share: its GPUs, or 1 for a task without. */
export const unitsOf = (task: TaskRecord): number => Math.max(1, task.requirements.gpus.count);
