import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { JoinTokenList, NodeView } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../../test/support/in-process.js';
import { runGpuai } from '../testing/run-cli.js';

let h: ReturnType<typeof inProcessControlPlane>;
beforeEach(async () => {
  h = inProcessControlPlane({ enrollment: 'token' });
  await h.ready;
});
afterEach(() => h.close());

/** `gpuai ...` in-process against the real control plane app, with its admin key. */
const gpuai = (...args: string[]) =>
  runGpuai(args, {
    env: { GPUAI_API: 'http://gpuai.test', GPUAI_API_KEY: h.adminKey },
    io: {
      fetch: ((url: string | URL | Request, init?: RequestInit) => h.app.request(String(url), init)) as typeof fetch,
    },
  });

describe('gpuai tokens', () => {
  it('creates a token a node joins with, lists it used, and revokes it', async () => {
    const created = await gpuai('tokens', 'create', '--operator', 'me', '--pools', 'local/*', '--max-uses', '2');
    expect(created.code).toBe(0);
    const secret = created.stdout.trim();
    expect(secret).toMatch(/^jt_[0-9A-Z]{26}\.[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('operator me');
    expect(created.stderr).toContain('GPUAI_JOIN_TOKEN=');
    expect(created.stderr).not.toContain(secret.split('.')[1]);

    const node = new TestNode(h.request);
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
    expect(json.tokens.map((t) => [t.id, t.status])).toEqual([[id, 'revoked']]);
    const refused = await new TestNode(h.request).register(cpuInventory(), secret);
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
    const before = h.snapshot();
    const run = await gpuai('tokens', 'create', ...flags);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(message);
    expect(h.snapshot()).toEqual(before);
  });

  it('needs an admin key: a read key gets the API error (exit 4)', async () => {
    const reader = await h.createKey('default', ['read']);
    const run = await runGpuai(['tokens', 'list'], {
      env: { GPUAI_API: 'http://gpuai.test', GPUAI_API_KEY: reader },
      io: {
        fetch: ((url: string | URL | Request, init?: RequestInit) => h.app.request(String(url), init)) as typeof fetch,
      },
    });
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('insufficient_scope');
  });
});
