import { describe, expect, it } from 'vitest';
import type { NodeInventory } from '../../../protocol/index.js';
import { demandOf, fitOnNode, type HeldTask, type TaskRequirements, unknownGpuModels } from './fit.js';

const inventory: NodeInventory = {
  gpus: [0, 1, 2, 3].map((index) => ({
    index,
    vendor: 'nvidia' as const,
    model: index < 2 ? 'NVIDIA A100-SXM4-80GB' : 'NVIDIA H100 80GB HBM3',
    vramMiB: 81920,
    uuid: `GPU-${index}`,
  })),
  cpu: { model: 'Test CPU', cores: 16 },
  memoryMiB: 65536,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region: 'local',
};

const req = (overrides: Partial<TaskRequirements> = {}): TaskRequirements => ({
  gpus: { count: 1 },
  needsContainer: false,
  ...overrides,
});
const held = (gpuIndices: number[], cpuCores = 0, memoryMiB = 0): HeldTask => ({
  taskId: `job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.${gpuIndices.join('')}`,
  attempt: 1,
  gpuIndices,
  cpuCores,
  memoryMiB,
});

describe('fitOnNode beside what the node holds', () => {
  it('picks the lowest free matching GPUs, never one a held task uses', () => {
    expect(fitOnNode(req({ gpus: { count: 2 } }), inventory)).toEqual([0, 1]);
    expect(fitOnNode(req({ gpus: { count: 2 } }), inventory, [held([0]), held([2])])).toEqual([1, 3]);
    expect(fitOnNode(req({ gpus: { count: 1, models: ['H100'] } }), inventory, [held([2])])).toEqual([3]);
    expect(fitOnNode(req({ gpus: { count: 1, models: ['H100'] } }), inventory, [held([2, 3])])).toBeUndefined();
    expect(fitOnNode(req({ gpus: { count: 3 } }), inventory, [held([1, 2])])).toBeUndefined();
  });

  it('takes held cores and memory off the node', () => {
    expect(fitOnNode(req({ cpuCores: 8 }), inventory, [held([0], 8)])).toEqual([1]);
    expect(fitOnNode(req({ cpuCores: 9 }), inventory, [held([0], 8)])).toBeUndefined();
    expect(fitOnNode(req({ memoryMiB: 32768 }), inventory, [held([0], 0, 32768)])).toEqual([1]);
    expect(fitOnNode(req({ memoryMiB: 32769 }), inventory, [held([0], 0, 32768)])).toBeUndefined();
  });

  it('counts a task with neither GPUs nor cores as one core', () => {
    const cpuTask = req({ gpus: { count: 0 } });
    expect(demandOf(cpuTask)).toEqual({ cpuCores: 1, memoryMiB: 0 });
    expect(demandOf(req())).toEqual({ cpuCores: 0, memoryMiB: 0 });
    const sixteen = Array.from({ length: 16 }, () => held([], 1));
    expect(fitOnNode(cpuTask, inventory, sixteen.slice(1))).toEqual([]);
    expect(fitOnNode(cpuTask, inventory, sixteen)).toBeUndefined();
  });
});

describe('GPU model requirements', () => {
  it('names the models no accelerator class knows, for the vendor asked', () => {
    expect(unknownGpuModels({ count: 3, models: ['banana'] })).toEqual(['banana']);
    expect(
      unknownGpuModels({ count: 1, models: ['H100', 'RTX 4090', 'NVIDIA A100-SXM4-80GB', 'mi300x', 'rtx4090'] }),
    ).toEqual([]);
    expect(unknownGpuModels({ count: 1, models: ['A100', 'a1000'] })).toEqual(['a1000']);
    expect(unknownGpuModels({ count: 1, vendor: 'amd', models: ['H100', 'MI300X'] })).toEqual(['H100']);
    expect(unknownGpuModels({ count: 2 })).toEqual([]);
  });

  it('matches a class name as well as a substring of the device model', () => {
    const rtx: NodeInventory = {
      ...inventory,
      gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA GeForce RTX 4090', vramMiB: 24564, uuid: 'GPU-0' }],
    };
    expect(fitOnNode(req({ gpus: { count: 1, models: ['rtx4090'] } }), rtx)).toEqual([0]);
    expect(fitOnNode(req({ gpus: { count: 1, models: ['RTX 4090'] } }), rtx)).toEqual([0]);
    expect(fitOnNode(req({ gpus: { count: 1, models: ['rtx4080'] } }), rtx)).toBeUndefined();
  });
});
