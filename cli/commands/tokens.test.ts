import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { JoinTokenList, NodeView } from '../../protocol/index.js';
import { cpuInventory, TestNode } from '../../test/support/in-process.js';
import { startTestControlPlane, type TestControlPlane } from '../testing/control-plane.js';
import { runGpuai } from '../testing/run-cli.js';

/** `gpuai tokens ...` against the real embedded control plane, which admits nodes only with a token. */

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(() => cp.stop());

const gpuai = (...args: string[]) => runGpuai(args, { env: cp.env, io: { fetch: cp.fetch } });
/** A node that signs its requests as the agent does, straight to the server. */
const newNode = () => new TestNode((path, init) => fetch(`${cp.directUrl}${path}`, init));

describe('gpuai tokens', () => {
  it('creates a token a node joins with, lists it used, and revokes it', async () => {
    const created = await gpuai('tokens', 'create', '--operator', 'me', '--pools', 'local/*', '--max-uses', '2');
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^jt_[0-9A-Z]{26}\.[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('operator me');
    expect(created.stderr).toContain('GPUAI_JOIN_TOKEN=');
    expect(created.stderr).not.toContain(secret.split('.')[1]);

    const node = newNode();
    const registered = await node.register(cpuInventory(), secret);
    expect(registered.status).toBe(201);
    expect(((await registered.json()) as { node: NodeView }).node.operator).toBe('me');

    const listed = await gpuai('tokens', 'list');
    expect(listed.code).toBe(0);
    const id = secret.split('.')[0] ?? '';
    expect(listed.stdout).toMatch(new RegExp(`^${id} +me +local/\\* +1/2 +active `, 'm'));

    const revoked = await gpuai('tokens', 'revoke', id);
    expect(revoked.code).toBe(0);
    const json = JSON.parse((await gpuai('tokens', 'list', '--json')).stdout) as JoinTokenList;
    expect(json.tokens.filter((t) => t.id === id).map((t) => [t.id, t.status])).toEqual([[id, 'revoked']]);
    const refused = await newNode().register(cpuInventory(), secret);
    expect(refused.status).toBe(401);
  });

  it.each([
    [['--pools', 'local/*'], /--operator is required/],
    [['--operator', 'Me Inc'], /not an operator name/],
    [['--operator', 'anonymous'], /reserved/],
    [['--operator', 'me', '--pools', 'local'], /not a pool/],
    [['--operator', 'me', '--expires', '10s'], /--expires/],
    [['--operator', 'me', '--max-uses', '0'], /--max-uses/],
  ])('refuses %j as a usage error (exit 2) before any request', async (flags, message) => {
    const before = cp.sent.length;
    const run = await gpuai('tokens', 'create', ...flags);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(cp.sent.length).toBe(before);
  });

  it('needs an admin key: a read key gets the API error (exit 4)', async () => {
    const { key: reader } = await cp.api<{ key: string }>('/v1/keys', {
      method: 'POST',
      body: JSON.stringify({ scopes: ['read'] }),
    });
    const run = await runGpuai(['tokens', 'list'], { env: { ...cp.env, GPUAI_API_KEY: reader } });
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('insufficient_scope');
  });
});
