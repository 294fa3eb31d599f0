import { describe, expect, it } from 'vitest';
import { FleetIndex } from '../../functions/domain/scheduling/placement/index.js';
import type { NodeInventory } from '../../protocol/index.js';
import { seededRandom } from '../shared/random.js';
import { makePolicy, type PolicyName } from './policies.js';

function cpuNode(cores: number): NodeInventory {
  return {
    gpus: [],
    cpu: { model: 'Intel Xeon Gold 6448Y', cores },
    memoryMiB: 65_536,
    os: 'linux',
    arch: 'x64',
    runtimes: ['docker', 'process'],
    region: 'us-east',
  };
}

const nodeId = (i: number): string => `node_${String(i).padStart(26, 'a')}`;

describe('bench:sim baselines', () => {
  // 5,000 nodes too small for the task, then one that fits: more candidates than a baseline's cap.
  it.each(['bestFit', 'random', 'roundRobin'] as PolicyName[])(
    '%s finds the one node with room behind more candidates than its scan cap',
    (name) => {
      const index = new FleetIndex();
      for (let i = 0; i < 5_000; i++) index.add({ id: nodeId(i), inventory: cpuNode(4), trust: 1 });
      index.add({ id: nodeId(5_000), inventory: cpuNode(64), trust: 1 });
      const policy = makePolicy(name, index.perf, seededRandom(1));
      const task = {
        id: 'job_00000000000000000000000000#0',
        workload: 'cpu-etl',
        requirements: { gpus: { count: 0 }, cpuCores: 32, memoryMiB: 8_192, needsContainer: true },
      };
      expect(policy(index, task, Date.UTC(2026, 0, 1))).toBe(nodeId(5_000));
    },
  );
});
