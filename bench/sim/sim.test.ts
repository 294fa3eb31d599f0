import { describe, expect, it } from 'vitest';
import { generateFleet } from '../shared/fleet.js';
import { type PolicyName, policyNames } from './policies.js';
import { type PolicyResult, simulate } from './simulate.js';
import { generateWorkload } from './workload.js';

/** What a run decides, without what it measured of the machine (wall and CPU time). */
function outcome(result: PolicyResult): Omit<PolicyResult, 'wallMs' | 'cpuMs' | 'policyMs' | 'decisionUs'> {
  const { wallMs: _wall, cpuMs: _cpu, policyMs: _policy, decisionUs: _decision, ...rest } = result;
  return rest;
}

async function run(policy: PolicyName, seed: number): Promise<PolicyResult> {
  const fleet = generateFleet({ nodes: 150, seed });
  const work = generateWorkload(fleet, { tasks: 600, seed, load: 0.9 });
  // Heavy churn so that the short run exercises lost leases, releases and retries.
  return simulate(policy, fleet, work, { seed, churnPerHour: 0.5, tickMs: 500 });
}

describe('bench:sim simulator', () => {
  it.each(policyNames)('%s: every task ends verified or failed in the store, none lost', async (policy) => {
    const result = await run(policy, 7);
    expect(result.lost).toBe(0);
    expect(result.verified + result.failed).toBe(result.tasks);
    expect(result.crashes + result.departures).toBeGreaterThan(0);
    expect(result.attempts).toBeGreaterThan(result.tasks);
    // The wait in the queue is the queueing delay less the nodes' round trips.
    expect(result.p99WaitMs).toBeLessThanOrEqual(result.p99QueueMs);
    expect(result.longWaits).toBeLessThanOrEqual(result.tasks);
  });

  it('the same seed gives the same run, another seed another run', async () => {
    const first = outcome(await run('ours', 11));
    const again = outcome(await run('ours', 11));
    expect(again).toEqual(first);
    const other = outcome(await run('ours', 12));
    expect(other).not.toEqual(first);
  });

  it('the fleet and the workload are the same for the same seed', () => {
    const a = generateFleet({ nodes: 500, seed: 3 });
    const b = generateFleet({ nodes: 500, seed: 3 });
    expect(b).toEqual(a);
    const wa = generateWorkload(a, { tasks: 2_000, seed: 3 });
    const wb = generateWorkload(b, { tasks: 2_000, seed: 3 });
    expect(wb).toEqual(wa);
    expect(new Set(a.map((n) => n.id)).size).toBe(500);
  });
});
