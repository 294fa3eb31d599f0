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

/** Whether `a` comes before `b`: smaller factor, or the same factor and a smaller base. */
const before = (a: Keyed, b: Keyed): boolean => a.factor < b.factor || (a.factor === b.factor && a.base < b.base);

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

export class SlotHeap<E extends Keyed> {
  readonly slots: HeapSlot<E>[] = [];

  get size(): number {
    return this.slots.length;
  }

  /** The smallest key, or +Infinity when empty. */
  minKey(): number {
    return this.slots[0]?.entry.factor ?? Number.POSITIVE_INFINITY;
  }

  push(slot: HeapSlot<E>): void {
    slot.pos = this.slots.length;
    this.slots.push(slot);
    this.up(slot.pos);
  }

  remove(slot: HeapSlot<E>): void {
    const at = slot.pos;
    const last = this.slots.pop();
    slot.pos = -1;
    if (last === undefined || last === slot) return;
    this.slots[at] = last;
    last.pos = at;
    this.up(at);
    this.down(last.pos);
  }

  /** Restores the order after the slot's key changed. */
  rekey(slot: HeapSlot<E>): void {
    this.up(slot.pos);
    this.down(slot.pos);
  }

  private up(at: number): void {
    const slots = this.slots;
    const slot = slots[at] as HeapSlot<E>;
    const entry = slot.entry;
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const parent = slots[parentAt] as HeapSlot<E>;
      if (!before(entry, parent.entry)) break;
      slots[at] = parent;
      parent.pos = at;
      at = parentAt;
    }
    slots[at] = slot;
    slot.pos = at;
  }

  private down(at: number): void {
    const slots = this.slots;
    const n = slots.length;
    const slot = slots[at] as HeapSlot<E>;
    const entry = slot.entry;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= n) break;
      const right = child + 1;
      if (right < n && before((slots[right] as HeapSlot<E>).entry, (slots[child] as HeapSlot<E>).entry)) {
        child = right;
      }
      const smaller = slots[child] as HeapSlot<E>;
      if (!before(smaller.entry, entry)) break;
      slots[at] = smaller;
      smaller.pos = at;
      at = child;
    }
    slots[at] = slot;
    slot.pos = at;
  }
}

/**
 * Walks a heap's slots in ascending key order without changing the heap: a small frontier heap
 * of array positions, starting at the root; popping a position offers its two children. Visiting
 * v slots costs O(v log v), whatever the heap's size. One walker is reused across calls (the
 * placement loop is synchronous), so a walk allocates nothing once its arrays have grown.
 */
export class HeapWalker<E extends Keyed> {
  private frontier: number[] = [];
  private slots: HeapSlot<E>[] = [];
  private n = 0;

  start(heap: SlotHeap<E>): void {
    this.slots = heap.slots;
    this.n = 0;
    if (this.slots.length > 0) this.frontier[this.n++] = 0;
  }

  /** The key the next slot will have, +Infinity when the walk is over. */
  peekKey(): number {
    return this.n === 0
      ? Number.POSITIVE_INFINITY
      : (this.slots[this.frontier[0] as number] as HeapSlot<E>).entry.factor;
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

  private entryAt(pos: number): E {
    return (this.slots[pos] as HeapSlot<E>).entry;
  }

  private add(pos: number): void {
    const f = this.frontier;
    let at = this.n++;
    const entry = this.entryAt(pos);
    while (at > 0) {
      const parentAt = (at - 1) >> 1;
      const parent = f[parentAt] as number;
      if (!before(entry, this.entryAt(parent))) break;
      f[at] = parent;
      at = parentAt;
    }
    f[at] = pos;
  }

  private siftDown(pos: number): void {
    const f = this.frontier;
    const n = this.n;
    const entry = this.entryAt(pos);
    let at = 0;
    for (;;) {
      let child = 2 * at + 1;
      if (child >= n) break;
      if (child + 1 < n && before(this.entryAt(f[child + 1] as number), this.entryAt(f[child] as number))) child++;
      const smaller = f[child] as number;
      if (!before(this.entryAt(smaller), entry)) break;
      f[at] = smaller;
      at = child;
    }
    f[at] = pos;
  }
}
