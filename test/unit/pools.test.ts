import { describe, expect, it } from 'vitest';
import { poolQueueName } from '../../functions/adapters/aws/sqs-work-hints.js';
import {
  acceleratorClass,
  acceleratorClasses,
  defaultRegions,
  poolInScope,
  poolsOf,
  regionAllowed,
} from '../../functions/domain/resource/pools.js';
import type { GpuDevice, NodeInventory } from '../../protocol/index.js';

const gpu = (vendor: GpuDevice['vendor'], model: string) => ({ vendor, model });

describe('canonical accelerator classes', () => {
  it.each([
    ['nvidia', 'NVIDIA H100 80GB HBM3', 'h100'],
    ['nvidia', 'NVIDIA H100 NVL', 'h100'],
    ['nvidia', 'NVIDIA H100 PCIe', 'h100'],
    ['nvidia', 'NVIDIA H200', 'h200'],
    ['nvidia', 'NVIDIA GH200 480GB', 'gh200'],
    ['nvidia', 'NVIDIA A100-SXM4-80GB', 'a100'],
    ['nvidia', 'NVIDIA A100 80GB PCIe', 'a100'],
    ['nvidia', 'NVIDIA A10G', 'a10g'],
    ['nvidia', 'NVIDIA A10', 'a10'],
    ['nvidia', 'NVIDIA L4', 'l4'],
    ['nvidia', 'NVIDIA L40S', 'l40s'],
    ['nvidia', 'Tesla T4', 't4'],
    ['nvidia', 'Tesla V100-SXM2-16GB', 'v100'],
    ['nvidia', 'NVIDIA GeForce RTX 4090', 'rtx4090'],
    ['nvidia', 'NVIDIA GeForce RTX 4070 Ti SUPER', 'rtx4070'],
    ['nvidia', 'NVIDIA RTX 6000 Ada Generation', 'rtx6000-ada'],
    ['nvidia', 'NVIDIA RTX A6000', 'rtxa6000'],
    ['amd', 'AMD Instinct MI300X', 'mi300x'],
    ['amd', 'AMD Instinct MI250X', 'mi250x'],
    ['amd', 'AMD Radeon RX 7900 XTX', 'rx7900xtx'],
    ['amd', 'Radeon RX 7900 XT', 'rx7900xt'],
    ['intel', 'Intel Gaudi 2', 'gaudi2'],
  ] as const)('%s %s -> %s', (vendor, model, expected) => {
    expect(acceleratorClass(gpu(vendor, model))).toBe(expected);
  });

  it('puts models the table does not know into other-<vendor>, never a class made of the model string', () => {
    expect(acceleratorClass(gpu('nvidia', 'NVIDIA RTX A1000'))).toBe('other-nvidia'); // not a100
    expect(acceleratorClass(gpu('nvidia', 'Quadro RTX 6000'))).toBe('other-nvidia');
    expect(acceleratorClass(gpu('amd', 'Raphael'))).toBe('other-amd');
    expect(acceleratorClass(gpu('apple', 'Apple M3 Max'))).toBe('other-apple');
    expect(acceleratorClass(gpu('other', 'my-very-own-queue-name'))).toBe('other');
    // The vendor must agree with the table: an AMD device naming itself H100 is no H100.
    expect(acceleratorClass(gpu('amd', 'NVIDIA H100 80GB HBM3'))).toBe('other-amd');
    expect(acceleratorClass(gpu('nvidia', 'h100'.repeat(40)))).toBe('other-nvidia');
  });

  it('yields only classes of the closed set, whatever the model string', () => {
    const models = ['', ' ', '💥', 'H100\n; DROP', 'a'.repeat(128), 'nvidia/../../etc', 'MI300X MI300X', 'l4 l40'];
    for (const vendor of ['nvidia', 'amd', 'intel', 'apple', 'other'] as const) {
      for (const model of models) expect(acceleratorClasses.has(acceleratorClass(gpu(vendor, model)))).toBe(true);
    }
    for (const cls of acceleratorClasses) expect(cls).toMatch(/^[a-z0-9][a-z0-9-]{0,31}$/);
  });

  it('names a node’s pools <region>/<class>, one per class, cpu without GPUs', () => {
    const inventory = (gpus: { vendor: GpuDevice['vendor']; model: string }[]): NodeInventory => ({
      gpus: gpus.map((g, index) => ({ ...g, index, vramMiB: 1024, uuid: `GPU-${index}` })),
      cpu: { model: 'cpu', cores: 4 },
      memoryMiB: 1024,
      os: 'linux',
      arch: 'x64',
      runtimes: ['process'],
      region: 'eu-west',
    });
    expect(poolsOf(inventory([]))).toEqual(['eu-west/cpu']);
    expect(
      poolsOf(
        inventory([gpu('nvidia', 'NVIDIA H100 80GB HBM3'), gpu('nvidia', 'NVIDIA H100 NVL'), gpu('nvidia', 'X')]),
      ),
    ).toEqual(['eu-west/h100', 'eu-west/other-nvidia']);
  });

  it('bounds the pool queues a fleet can make to regions x classes', () => {
    const names = new Set<string>();
    for (const region of defaultRegions) {
      for (const cls of acceleratorClasses) names.add(poolQueueName('gpuai', `${region}/${cls}`));
    }
    expect(names.size).toBe(defaultRegions.length * acceleratorClasses.size);
  });
});

describe('regions', () => {
  it('allows the listed regions only, or any with *', () => {
    expect(regionAllowed('eu-west', defaultRegions)).toBe(true);
    expect(regionAllowed('local', defaultRegions)).toBe(true);
    expect(regionAllowed('attacker-made-region-1', defaultRegions)).toBe(false);
    expect(regionAllowed('lab-7', ['lab-7'])).toBe(true);
    expect(regionAllowed('eu-west', ['lab-7'])).toBe(false);
    expect(regionAllowed('anything', '*')).toBe(true);
  });
});

describe('join token pool scope', () => {
  it('matches exact pools and * on either side; no scope admits every pool', () => {
    expect(poolInScope('eu-west/h100', undefined)).toBe(true);
    expect(poolInScope('eu-west/h100', ['eu-west/h100'])).toBe(true);
    expect(poolInScope('eu-west/h100', ['*/h100'])).toBe(true);
    expect(poolInScope('eu-west/h100', ['eu-west/*'])).toBe(true);
    expect(poolInScope('eu-west/h100', ['*/*'])).toBe(true);
    expect(poolInScope('eu-west/a100', ['eu-west/h100', '*/l4'])).toBe(false);
    expect(poolInScope('us-east/h100', ['eu-west/*'])).toBe(false);
    expect(poolInScope('eu-west/h100', [])).toBe(false);
  });
});
