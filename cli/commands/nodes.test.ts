import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeControlPlane, fakeNodeId, startFakeControlPlane } from '../testing/fake-control-plane.js';
import { runGpuai } from '../testing/run-cli.js';

let fake: FakeControlPlane;
beforeAll(async () => {
  fake = await startFakeControlPlane();
});
afterAll(() => fake.close());

const gpuai = (...args: string[]) => runGpuai(args, { env: { GPUAI_API: fake.url } });

describe('nodes', () => {
  it('lists nodes with their GPUs summarized', async () => {
    fake.addNode();
    fake.addNode({ name: 'laptop', status: 'unavailable', inventory: { ...fake.addNode().inventory, gpus: [] } });
    const run = await gpuai('nodes', 'list');
    expect(run.code).toBe(0);
    const lines = run.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^ID +NAME +STATUS +REGION +GPUS +TASKS DONE +LAST SEEN$/);
    expect(lines[1]).toMatch(/^node_\w{26} +rig-1 +live +eu-west +2x H100 80GB +42 +\S/);
    expect(lines.some((line) => /laptop +unavailable +eu-west +- +42/.test(line))).toBe(true);
  });

  it('follows cursors with --all', async () => {
    const run = await gpuai('nodes', 'list', '--all', '--limit', '1', '--json');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).nodes).toHaveLength(3);
  });

  it('shows one node with a GPU table', async () => {
    const run = await gpuai('nodes', 'get', fakeNodeId(1));
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^gpus +2x H100 80GB$/m);
    expect(run.stdout).toMatch(/^cpu +AMD EPYC 9654 \(96 cores\)$/m);
    expect(run.stdout).toMatch(/^tasks +42 completed, 1 failed, 0 leases lost$/m);
    expect(run.stdout).toMatch(/^ {2}0 +NVIDIA H100 80GB HBM3 +79\.6 GiB +cc 9\.0 +- +GPU-1-0$/m);
  });

  it('renders an unknown node as an API error (exit 4)', async () => {
    const run = await gpuai('nodes', 'get', fakeNodeId(99));
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('HTTP 404 node_not_found');
  });
});
