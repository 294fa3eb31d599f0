import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { NodeView } from '../../protocol/node.js';
import { startTestControlPlane, type TestControlPlane } from '../testing/control-plane.js';
import { runGpuai } from '../testing/run-cli.js';

let cp: TestControlPlane;
let rig: NodeView;
beforeAll(async () => {
  cp = await startTestControlPlane();
  const gpus = [0, 1].map((index) => ({
    index,
    vendor: 'nvidia' as const,
    model: 'NVIDIA H100 80GB HBM3',
    vramMiB: 81559,
    uuid: `GPU-rig-${index}`,
    computeCapability: '9.0',
  }));
  rig = await cp.addNode({ gpus, cpu: { model: 'AMD EPYC 9654', cores: 96 } });
  await cp.addNode({ region: 'local' });
  await cp.addNode();
});
afterAll(() => cp.stop());

const gpuai = (...args: string[]) => runGpuai(args, { env: cp.env });

describe('nodes', () => {
  it('lists nodes with their GPUs summarized', async () => {
    const run = await gpuai('nodes', 'list');
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const lines = run.stdout.trim().split('\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^ID +NAME +STATUS +REGION +GPUS +TASKS DONE +LAST SEEN$/);
    expect(lines.find((line) => line.startsWith(rig.id))).toMatch(
      /^node_\w{26} +\S+ +live +eu-west +2x H100 80GB +0 +\S/,
    );
    expect(lines.some((line) => / live +local +- +0 +/.test(line))).toBe(true);
  });

  it('follows cursors with --all', async () => {
    const run = await gpuai('nodes', 'list', '--all', '--limit', '1', '--json');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).nodes).toHaveLength(3);
    expect(cp.proxy.requests.filter((r) => r.path.startsWith('/v1/nodes?limit=1'))).toHaveLength(3);
  });

  it('filters by status with --status, following the filter through every cursor, and refuses unknown statuses', async () => {
    const live = await gpuai('nodes', 'list', '--status', 'live', '--all', '--limit', '2', '--json');
    expect(live.code).toBe(0);
    expect(JSON.parse(live.stdout).nodes.map((node: NodeView) => node.status)).toEqual(['live', 'live', 'live']);
    const sent = cp.proxy.requests.filter((r) => r.path.startsWith('/v1/nodes?'));
    expect(sent.at(-1)?.path).toMatch(/^\/v1\/nodes\?status=live&limit=2&cursor=/);
    // Every node here beats: none is unavailable.
    const unavailable = await gpuai('nodes', 'list', '--status', 'unavailable');
    expect(unavailable).toMatchObject({ code: 0, stdout: 'no nodes\n' });
    expect(cp.proxy.requests.at(-1)?.path).toBe('/v1/nodes?status=unavailable');
    const bad = await gpuai('nodes', 'list', '--status', 'dead');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--status expects one of live, unavailable, got "dead"');
  });

  it('shows one node with a GPU table', async () => {
    const run = await gpuai('nodes', 'get', rig.id);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^gpus +2x H100 80GB$/m);
    expect(run.stdout).toMatch(/^cpu +AMD EPYC 9654 \(96 cores\)$/m);
    expect(run.stdout).toMatch(/^tasks +0 completed, 0 failed, 0 leases lost$/m);
    expect(run.stdout).toMatch(/^ {2}0 +NVIDIA H100 80GB HBM3 +79\.6 GiB +cc 9\.0 +- +GPU-rig-0$/m);
  });

  it('renders an unknown node as an API error (exit 4)', async () => {
    const run = await gpuai('nodes', 'get', `node_${'a'.repeat(26)}`);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('HTTP 404 node_not_found');
  });
});
