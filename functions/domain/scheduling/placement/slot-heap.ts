/**
 * A binary min-heap of slots that knows where each slot sits, so that a node whose key changes or
 * that leaves its bucket is moved or taken out in O(log n) instead of searched for. The key is
 * read from the slot's node (`entry.factor`, ties broken by `entry.base`): one node in two
 * buckets keeps one key. The tie-break matters where many nodes share a factor (nodes nothing has
 * been learned about yet): the walk then meets the nearest of them first.
 */
export interface HeapSlot<E extends Keyed> {
  entry: E;
  /** Position in the heap's (or list's) array; -1 while the slot is in none. */
  pos: number;
}

/** What a heap orders by: `factor`, then `base`. */
export interface Keyed {
  factor: number;
  base: number;
}

/**
 * An unordered list of slots with O(1) add and remove (the last slot fills the hole): for nodes
 * that something iterates but nothing walks in key order.
 */
export class SlotList<E extends Keyed> {
  readonly slots: HeapSlot<E>[] = [];

  get size(): number {
    return this.slots.length;
  }

  push(slot: HeapSlot<E>): void {
    slot.pos = this.slots.length;
    this.slots.push(slot);
  }

  remove(slot: HeapSlot<E>): void {
    const at = slot.pos;
    const last = this.slots.pop();
    slot.pos = -1;
    if (last === undefined || last === slot) return;
    this.slots[at] = last;
    last.pos = at;
  }
}

/**
 * The heap keeps each slot's key (factor, then base) in typed arrays beside the slots, moved with
 * them: a sift compares numbers in two dense arrays instead of following slot -> node for each
 * comparison (two cache misses a level on a heap of 100,000 nodes). A node's key is copied in
 * when it enters and on `rekey`, so whoever changes `factor` or `base` must call `rekey`.
 */
export class SlotHeap<E extends Keyed> {
  readonly slots: HeapSlot<E>[] = [];
  /** @internal Per position, its node's factor (the key) and base (the tie-break). */
  factors = new Float64Array(16);
  /** @internal */ bases = new Float64Array(16);

  get size(): number {
    return this.slots.length;
  }

  /** The smallest key, or +Infinity when empty. */
  minKey(): number {
    return this.slots.length === 0 ? Number.POSITIVE_INFINITY : (this.factors[0] as number);
  }

  push(slot: HeapSlot<E>): void {
    const at = this.slots.length;
    if (at === this.factors.length) this.grow();
    slot.pos = at;
    this.slots.push(slot);
    this.up(at, slot.entry.factor, slot.entry.base);
  }

  remove(slot: HeapSlot<E>): void {
    const at = slot.pos;
    const lastAt = this.slots.length - 1;
    const last = this.slots.pop();
    slot.pos = -1;
    if (last === undefined || last === slot) return;
    const factor = this.factors[lastAt] as number;
    const base = this.bases[lastAt] as number;
    this.slots[at] = last;
    last.pos = at;
    this.up(at, factor, base);
    this.down(last.pos, factor, base);
  }

  /** Restores the order after the slot's key changed (copies its node's factor and base in). */
  rekey(slot: HeapSlot<E>): void {
    this.up(slot.pos, slot.entry.factor, slot.entry.base);
    this.down(slot.pos, slot.entry.factor, slot.entry.base);
  }

  private grow(): void {
    const factors = new Float64Array(this.factors.length * 2);
    factors.set(this.factors);
    this.factors = factors;
    const bases = new Float64Array(this.bases.length * 2);
    bases.set(this.bases);
    this.bases = bases;
  }

  /** Moves the slot at `at`, whose key is (factor, base), up to its place. */
  private up(at: number, factor: number, base: number): void {
    const slots = this.slots;
    const factors = this.factors;
    const bases = this.bases;
    const slot = slots[at] as HeapSlot<E>;
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const pf = factors[parentAt] as number;
      if (!(factor < pf || (factor === pf && base < (bases[parentAt] as number)))) break;
      const parent = slots[parentAt] as HeapSlot<E>;
      slots[at] = parent;
      parent.pos = at;
      factors[at] = pf;
      bases[at] = bases[parentAt] as number;
      at = parentAt;
    }
    slots[at] = slot;
    slot.pos = at;
    factors[at] = factor;
    bases[at] = base;
  }

  private down(at: number, factor: number, base: number): void {
    const slots = this.slots;
    const factors = this.factors;
    const bases = this.bases;
    const n = slots.length;
    const slot = slots[at] as HeapSlot<E>;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && keyBefore(factors, bases, right, child)) child = right;
      const cf = factors[child] as number;
      if (!(cf < factor || (cf === factor && (bases[child] as number) < base))) break;
      const smaller = slots[child] as HeapSlot<E>;
      slots[at] = smaller;
      smaller.pos = at;
      factors[at] = cf;
      bases[at] = bases[child] as number;
      at = child;
    }
    slots[at] = slot;
    slot.pos = at;
    factors[at] = factor;
    bases[at] = base;
  }
}

/** Whether position `a`'s key comes before position `b`'s. */
const keyBefore = (factors: Float64Array, bases: Float64Array, a: number, b: number): boolean => {
  const fa = factors[a] as number;
  const fb = factors[b] as number;
  return fa < fb || (fa === fb && (bases[a] as number) < (bases[b] as number));
};

/**
 * Walks a heap's slots in ascending key order without changing the heap: a small frontier heap
 * of array positions, starting at the root; popping a position offers its two children. Visiting
 * v slots costs O(v log v), whatever the heap's size. One walker is reused across calls (the
 * placement loop is synchronous), so a walk allocates nothing once its arrays have grown. It
 * reads the heap's key arrays, so no node is touched until the walk hands it out.
 */
export class HeapWalker<E extends Keyed> {
  private frontier: number[] = [];
  private slots: HeapSlot<E>[] = [];
  private factors: Float64Array = new Float64Array(0);
  private bases: Float64Array = new Float64Array(0);
  private n = 0;

  start(heap: SlotHeap<E>): void {
    this.slots = heap.slots;
    this.factors = heap.factors;
    this.bases = heap.bases;
    this.n = 0;
    if (this.slots.length > 0) this.frontier[this.n++] = 0;
  }

  /** The key the next slot will have, +Infinity when the walk is over. */
  peekKey(): number {
    return this.n === 0 ? Number.POSITIVE_INFINITY : (this.factors[this.frontier[0] as number] as number);
  }

  next(): HeapSlot<E> | undefined {
    if (this.n === 0) return undefined;
    const f = this.frontier;
    const slots = this.slots;
    const top = f[0] as number;
    // Replace the root with the last frontier position and sift it down.
    const last = f[--this.n] as number;
    if (this.n > 0) this.siftDown(last);
    const left = 2 * top + 1;
    if (left < slots.length) this.add(left);
    if (left + 1 < slots.length) this.add(left + 1);
    return slots[top];
  }

  private add(pos: number): void {
    const f = this.frontier;
    const factors = this.factors;
    const bases = this.bases;
    let at = this.n++;
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const parent = f[parentAt] as number;
      if (!keyBefore(factors, bases, pos, parent)) break;
      f[at] = parent;
      at = parentAt;
    }
    f[at] = pos;
  }

  private siftDown(pos: number): void {
    const f = this.frontier;
    const factors = this.factors;
    const bases = this.bases;
    const n = this.n;
    let at = 0;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= n) break;
      if (child + 1 < n && keyBefore(factors, bases, f[child + 1] as number, f[child] as number)) child++;
      const smaller = f[child] as number;
      if (!keyBefore(factors, bases, smaller, pos)) break;
      f[at] = smaller;
      at = child;
    }
    f[at] = pos;
  }
}
