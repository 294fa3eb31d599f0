/**
 * The simulator's event list: a calendar queue of fixed-width ticks. Events are three numbers
 * (kind, a, b) appended to their tick's array, so scheduling one is O(1) and allocates nothing per
 * event beyond the array's growth; events of one tick come back in the order they were added,
 * which keeps a run deterministic.
 */
export class Calendar {
  private readonly ticks: (number[] | undefined)[] = [];
  private size = 0;

  constructor(readonly tickMs: number) {}

  get pending(): number {
    return this.size;
  }

  /** Adds an event at `timeMs`, or in `notBefore` when that tick is earlier. */
  add(timeMs: number, notBefore: number, kind: number, a: number, b: number): void {
    const tick = Math.max(notBefore, Math.floor(timeMs / this.tickMs));
    let list = this.ticks[tick];
    if (list === undefined) {
      list = [];
      this.ticks[tick] = list;
    }
    list.push(kind, a, b);
    this.size++;
  }

  /** Takes the events of a tick (those added to it while it is being read are read too). */
  take(tick: number): number[] | undefined {
    const list = this.ticks[tick];
    if (list === undefined) return undefined;
    this.ticks[tick] = undefined;
    this.size -= list.length / 3;
    return list;
  }

  /** The first tick after `tick` that holds an event, or +Infinity when none does. */
  nextTick(tick: number): number {
    for (let t = tick + 1; t < this.ticks.length; t++) {
      if (this.ticks[t] !== undefined) return t;
    }
    return Number.POSITIVE_INFINITY;
  }
}
