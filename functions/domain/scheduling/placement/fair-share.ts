/** A waiting task as fair share orders it. */
export interface WaitingTask {
  id: string;
  /** 0-9, higher first; default 5. */
  priority?: number;
  /** The job owner; tasks without one share the anonymous tenant. */
  tenant?: string;
  /** Epoch ms it was queued: the oldest first among equals. */
  queuedAt: number;
  /** The work it adds to its tenant once it runs (GPUs, or 1 for a CPU task); default 1. */
  units?: number;
}

export const defaultPriority = 5;
const anonymous = '';

/**
 * Fair share between tenants: each tenant's running work (in units, GPUs say) over its weight is
 * its share, and the tenant with the least share goes first, its highest priority first. The
 * owner tells it when work starts and stops (`started`/`finished`), so a share is O(1) to read.
 *
 *   least share ─► that tenant's highest priority ─► its oldest task
 */
export class FairShare {
  private readonly running = new Map<string, number>();
  private readonly weights = new Map<string, number>();

  /** A tenant's weight (default 1): twice the weight, twice the work before others go first. */
  setWeight(tenant: string, weight: number): void {
    if (!(weight > 0)) throw new RangeError(`weight must be positive, got ${weight}`);
    this.weights.set(tenant, weight);
  }

  started(tenant: string | undefined, units = 1): void {
    const key = tenant ?? anonymous;
    this.running.set(key, (this.running.get(key) ?? 0) + units);
  }

  finished(tenant: string | undefined, units = 1): void {
    const key = tenant ?? anonymous;
    const left = (this.running.get(key) ?? 0) - units;
    if (left > 0) this.running.set(key, left);
    else this.running.delete(key);
  }

  /** Running work over weight. */
  share(tenant: string | undefined): number {
    const key = tenant ?? anonymous;
    return (this.running.get(key) ?? 0) / (this.weights.get(key) ?? 1);
  }

  /**
   * The order to offer waiting tasks in: round by round the tenant whose share (counting the tasks
   * already ordered before it as running) is least, its highest-priority task, oldest first among
   * equal priorities. Priority orders a tenant's own work and breaks ties of share; it never lets
   * one tenant's flood starve another (the dispatcher's TenantShares orders the same way:
   * docs/scheduling.md). So a tenant with a thousand queued tasks does not starve one with two, and
   * one already running much goes after those running little. O(n log n).
   */
  order<T extends WaitingTask>(tasks: readonly T[]): T[] {
    const tenants = new Map<string, T[]>();
    for (const task of tasks) {
      const tenant = task.tenant ?? anonymous;
      let queue = tenants.get(tenant);
      if (queue === undefined) {
        queue = [];
        tenants.set(tenant, queue);
      }
      queue.push(task);
    }
    const priorityOf = (task: T): number => task.priority ?? defaultPriority;
    const heads: { tenant: string; queue: T[]; next: number }[] = [];
    for (const [tenant, queue] of tenants) {
      queue.sort(
        (a, b) => priorityOf(b) - priorityOf(a) || a.queuedAt - b.queuedAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
      );
      heads.push({ tenant, queue, next: 0 });
    }
    const extra = new Map<string, number>();
    const shareOf = (tenant: string): number =>
      ((this.running.get(tenant) ?? 0) + (extra.get(tenant) ?? 0)) / (this.weights.get(tenant) ?? 1);
    const before = (a: (typeof heads)[number], b: (typeof heads)[number]): boolean => {
      const sa = shareOf(a.tenant);
      const sb = shareOf(b.tenant);
      if (sa !== sb) return sa < sb;
      const ta = a.queue[a.next] as T;
      const tb = b.queue[b.next] as T;
      if (priorityOf(ta) !== priorityOf(tb)) return priorityOf(ta) > priorityOf(tb);
      return ta.queuedAt < tb.queuedAt || (ta.queuedAt === tb.queuedAt && ta.id < tb.id);
    };
    // A binary heap of tenants by (share, head's priority, oldest head).
    const heap = new TenantHeap(heads, before);
    const out: T[] = [];
    for (let top = heap.pop(); top !== undefined; top = heap.pop()) {
      const task = top.queue[top.next++] as T;
      out.push(task);
      extra.set(top.tenant, (extra.get(top.tenant) ?? 0) + (task.units ?? 1));
      if (top.next < top.queue.length) heap.push(top);
    }
    return out;
  }
}

class TenantHeap<H> {
  private readonly items: H[] = [];

  constructor(
    initial: readonly H[],
    private readonly before: (a: H, b: H) => boolean,
  ) {
    for (const item of initial) this.push(item);
  }

  push(item: H): void {
    const items = this.items;
    let at = items.length;
    items.push(item);
    while (at > 0) {
      const parent = (at - 1) >> 1;
      if (!this.before(item, items[parent] as H)) break;
      items[at] = items[parent] as H;
      at = parent;
    }
    items[at] = item;
  }

  pop(): H | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (items.length === 0 || last === undefined) return top;
    let at = 0;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= items.length) break;
      if (child + 1 < items.length && this.before(items[child + 1] as H, items[child] as H)) child++;
      if (!this.before(items[child] as H, last)) break;
      items[at] = items[child] as H;
      at = child;
    }
    items[at] = last;
    return top;
  }
}
