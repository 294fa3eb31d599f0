import { describe, expect, it } from 'vitest';
import { FairShare, type WaitingTask } from './fair-share.js';

const task = (id: string, tenant: string, queuedAt: number, priority?: number, units?: number): WaitingTask => ({
  id,
  tenant,
  queuedAt,
  ...(priority === undefined ? {} : { priority }),
  ...(units === undefined ? {} : { units }),
});

describe('FairShare', () => {
  it('alternates tenants by share first, then by priority, oldest first within a tenant', () => {
    const fair = new FairShare();
    const tasks = [
      task('a1', 'alice', 1),
      task('a2', 'alice', 2),
      task('a3', 'alice', 3),
      task('b1', 'bob', 10),
      task('b2', 'bob', 11),
      task('urgent', 'carol', 50, 9),
      task('late', 'dave', 0, 1),
    ];
    // Equal shares: the highest priority first; dave's low priority does not wait for every other tenant's work.
    expect(fair.order(tasks).map((t) => t.id)).toEqual(['urgent', 'a1', 'b1', 'late', 'a2', 'b2', 'a3']);
  });

  it("does not let one tenant's priority-9 flood starve another tenant's default task", () => {
    const fair = new FairShare();
    const flood = Array.from({ length: 40 }, (_, i) => task(`a${i}`, 'alpha', i, 9));
    const order = fair.order([...flood, task('b', 'beta', 100)]).map((t) => t.id);
    expect(order.indexOf('b')).toBe(1);
  });

  it('puts the tenant already running the most work last among equals, in proportion to its weight', () => {
    const fair = new FairShare();
    fair.started('alice', 4);
    fair.started('bob', 1);
    const tasks = [task('a1', 'alice', 1), task('b1', 'bob', 2), task('c1', 'carol', 3), task('c2', 'carol', 4)];
    // carol runs nothing: two tasks before bob (1 running) catches up; alice (4) waits for both.
    expect(fair.order(tasks).map((t) => t.id)).toEqual(['c1', 'b1', 'c2', 'a1']);
    expect(fair.share('alice')).toBe(4);

    fair.setWeight('alice', 8);
    expect(fair.share('alice')).toBe(0.5);
    expect(fair.order(tasks).map((t) => t.id)[0]).toBe('c1');
    expect(fair.order(tasks).map((t) => t.id)[1]).toBe('a1');

    fair.finished('bob', 1);
    fair.finished('alice', 4);
    expect(fair.share('bob')).toBe(0);
    expect(fair.order([task('a', 'alice', 5), task('b', 'bob', 6)]).map((t) => t.id)).toEqual(['a', 'b']);
  });

  it('counts a task by its units: one 8-GPU task weighs as eight 1-GPU tasks', () => {
    const fair = new FairShare();
    const tasks = [
      task('big', 'alice', 1, 5, 8),
      task('a2', 'alice', 2, 5, 1),
      ...Array.from({ length: 3 }, (_, i) => task(`b${i}`, 'bob', 10 + i, 5, 1)),
    ];
    expect(fair.order(tasks).map((t) => t.id)).toEqual(['big', 'b0', 'b1', 'b2', 'a2']);
  });

  it('refuses a weight that is not positive', () => {
    expect(() => new FairShare().setWeight('x', 0)).toThrow(RangeError);
  });
});
