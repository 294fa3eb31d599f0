import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Enrollment, JoinTokenList, JoinTokenView, NodeInventory, NodeView } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

const h100s = (count: number, region = 'local'): NodeInventory =>
  cpuInventory({
    region,
    gpus: Array.from({ length: count }, (_, index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-${count}-${index}`,
    })),
  });

const day = 24 * 3600_000;

function world(enrollment: Enrollment = 'token', settings: { nodeExpiryMs?: number } = {}) {
  const clock = new ManualClock();
  const h = inProcessControlPlane({ clock, enrollment, settings: { livenessMs: 1e12, ...settings } });
  const createToken = async (body: Record<string, unknown>, key?: string) =>
    h.api(
      '/v1/join-tokens',
      { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) },
      ...(key === undefined ? [] : [key]),
    );
  const token = async (body: Record<string, unknown> = { operator: 'acme' }) => {
    const response = await createToken(body);
    expect(response.status).toBe(201);
    return (await response.json()) as { token: JoinTokenView; secret: string };
  };
  const node = () => new TestNode(h.request, clock);
  /** Every stored item but nonces and rate counters, for "nothing was written" assertions. */
  const state = () => h.snapshot();
  return { ...h, clock, createToken, token, node, state };
}

async function expectError(response: Response, status: number, code: string) {
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect({ status: response.status, code: body.error.code }).toEqual({ status, code });
  return body;
}

describe('join tokens', () => {
  it('shows the secret once and stores only its hash', async () => {
    const w = world();
    const { token, secret } = await w.token({ operator: 'acme', pools: ['local/*'], maxUses: 3, ttlSeconds: 3600 });
    expect(token).toMatchObject({ operator: 'acme', pools: ['local/*'], maxUses: 3, uses: 0, status: 'active' });
    expect(Date.parse(token.expiresAt) - Date.parse(token.createdAt)).toBe(3600_000);
    expect(secret.startsWith(`${token.id}.`)).toBe(true);

    const secretPart = secret.slice(token.id.length + 1);
    const stored = JSON.stringify(w.state());
    expect(stored).not.toContain(secretPart);
    expect(stored).toContain(createHash('sha256').update(secretPart).digest('hex'));

    const list = (await (await w.api('/v1/join-tokens')).json()) as JoinTokenList;
    expect(list.tokens.map((t) => t.id)).toEqual([token.id]);
    expect(JSON.stringify(list)).not.toContain(secretPart);
    expect(JSON.stringify(list)).not.toContain('secretHash');
    await w.close();
  });

  it('needs an admin key, and refuses bad requests, writing nothing', async () => {
    const w = world();
    await w.ready;
    const reader = await w.createKey('default', ['submit', 'read']);
    const before = w.state();
    await expectError(
      await w.request('/v1/join-tokens', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ operator: 'acme' }),
      }),
      401,
      'missing_api_key',
    );
    await expectError(await w.createToken({ operator: 'acme' }, reader), 403, 'insufficient_scope');
    await expectError(
      await w.api('/v1/join-tokens', { headers: { authorization: `Bearer ${reader}` } }),
      403,
      'insufficient_scope',
    );
    await expectError(await w.createToken({ operator: 'anonymous' }), 400, 'validation_failed');
    await expectError(await w.createToken({ operator: 'Acme Corp' }), 400, 'validation_failed');
    await expectError(await w.createToken({ operator: 'acme', pools: ['eu-west'] }), 400, 'validation_failed');
    await expectError(await w.createToken({ operator: 'acme', pools: ['mars/h100'] }), 400, 'pool_not_served');
    await expectError(await w.createToken({ operator: 'acme', pools: ['*/warp-drive'] }), 400, 'pool_not_served');
    await expectError(await w.createToken({ operator: 'acme', ttlSeconds: 1 }), 400, 'validation_failed');
    await expectError(await w.createToken({ operator: 'acme', uses: 1 }), 400, 'validation_failed');
    await expectError(
      await w.api('/v1/join-tokens/jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K', { method: 'DELETE' }),
      404,
      'join_token_not_found',
    );
    expect(w.state()).toEqual(before);
    await w.close();
  });
});

describe('registration under a join token', () => {
  it('refuses a new node without a token, with a malformed, unknown or wrong token, writing nothing', async () => {
    const w = world();
    const { token, secret } = await w.token();
    const before = w.state();
    const n = w.node();
    await expectError(await n.register(), 401, 'join_token_required');
    await expectError(await n.register(cpuInventory(), 'not-a-token'), 400, 'validation_failed');
    const wrongSecret = `${token.id}.${'A'.repeat(43)}`;
    await expectError(await n.register(cpuInventory(), wrongSecret), 401, 'invalid_join_token');
    const unknownId = `jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K.${secret.slice(token.id.length + 1)}`;
    await expectError(await n.register(cpuInventory(), unknownId), 401, 'invalid_join_token');
    expect(w.state()).toEqual(before);
    expect((await (await w.api('/v1/nodes')).json()) as { nodes: unknown[] }).toEqual({ nodes: [] });
    await w.close();
  });

  it('enrolls the node under the token’s operator, counts the use, and lets it re-register with its key alone', async () => {
    const w = world();
    const { token, secret } = await w.token({ operator: 'acme' });
    const n = w.node();
    const first = await n.register(cpuInventory(), secret);
    expect(first.status).toBe(201);
    expect(((await first.json()) as { node: NodeView }).node.operator).toBe('acme');
    const listed = (await (await w.api('/v1/nodes')).json()) as { nodes: NodeView[] };
    expect(listed.nodes.map((node) => [node.id, node.operator])).toEqual([[n.id, 'acme']]);
    expect((await w.cp.nodes.get(n.id)).enrollment).toEqual({ tokenId: token.id });

    // An agent restart: the key alone, even after the token was revoked.
    await w.api(`/v1/join-tokens/${token.id}`, { method: 'DELETE' });
    const again = await n.register(cpuInventory({ memoryMiB: 4096 }));
    expect(again.status).toBe(200);
    expect(((await again.json()) as { node: NodeView }).node).toMatchObject({ operator: 'acme', id: n.id });
    expect((await w.cp.joinTokens.get(token.id)).uses).toBe(1);
    await w.close();
  });

  it('refuses a revoked, an expired and a used-up token, writing nothing', async () => {
    const w = world();
    const revoked = await w.token();
    const revoke = await w.api(`/v1/join-tokens/${revoked.token.id}`, { method: 'DELETE' });
    expect(((await revoke.json()) as JoinTokenView).status).toBe('revoked');
    const expiring = await w.token({ operator: 'acme', ttlSeconds: 60 });
    const once = await w.token({ operator: 'acme', maxUses: 1 });
    expect((await w.node().register(cpuInventory(), once.secret)).status).toBe(201);
    w.clock.advance(61_000);

    const before = w.state();
    const n = w.node();
    await expectError(await n.register(cpuInventory(), revoked.secret), 401, 'join_token_revoked');
    await expectError(await n.register(cpuInventory(), expiring.secret), 401, 'join_token_expired');
    await expectError(await n.register(cpuInventory(), once.secret), 401, 'join_token_used_up');
    expect(w.state()).toEqual(before);

    const statuses = (await (await w.api('/v1/join-tokens')).json()) as JoinTokenList;
    expect(statuses.tokens.map((t) => [t.id, t.status, t.uses])).toEqual([
      [revoked.token.id, 'revoked', 0],
      [expiring.token.id, 'expired', 0],
      [once.token.id, 'used-up', 1],
    ]);
    await w.close();
  });

  it('admits exactly maxUses nodes when they register at once', async () => {
    const w = world();
    const { token, secret } = await w.token({ operator: 'acme', maxUses: 2 });
    const statuses = await Promise.all(
      Array.from({ length: 6 }, async () => (await w.node().register(cpuInventory(), secret)).status),
    );
    expect(statuses.filter((s) => s === 201)).toHaveLength(2);
    expect(statuses.filter((s) => s === 401)).toHaveLength(4);
    expect((await w.cp.joinTokens.get(token.id)).uses).toBe(2);
    expect((await w.cp.nodes.list(50)).nodes).toHaveLength(2);
    await w.close();
  });

  it('keeps a node within its token’s pool scope, at enrollment and at every re-registration', async () => {
    const w = world();
    const { secret } = await w.token({ operator: 'acme', pools: ['local/cpu', '*/l4'] });
    const before = w.state();
    const gpuNode = w.node();
    const refused = await expectError(await gpuNode.register(h100s(2), secret), 403, 'pool_not_in_token_scope');
    expect(refused.error.message).toContain('local/h100');
    expect(w.state()).toEqual(before);

    const n = w.node();
    expect((await n.register(cpuInventory(), secret)).status).toBe(201);
    await expectError(await n.register(h100s(1)), 403, 'pool_not_in_token_scope');
    expect((await w.cp.nodes.get(n.id)).pools).toEqual(['local/cpu']);
    await w.close();
  });

  it('under open enrollment admits a node without a token as anonymous, but never with a bad token', async () => {
    const w = world('open');
    const n = w.node();
    const response = await n.register();
    expect(response.status).toBe(201);
    expect(((await response.json()) as { node: NodeView }).node.operator).toBe('anonymous');
    await expectError(
      await w.node().register(cpuInventory(), `jt_01JD7Z5C2Q9W8V6T4R2P0N8M6K.${'A'.repeat(43)}`),
      401,
      'invalid_join_token',
    );
    const { secret } = await w.token({ operator: 'lab' });
    const withToken = await w.node().register(cpuInventory(), secret);
    expect(((await withToken.json()) as { node: NodeView }).node.operator).toBe('lab');
    await w.close();
  });

  it('refuses a region the deployment does not serve, writing nothing', async () => {
    const w = world('open');
    const before = w.state();
    await expectError(await w.node().register(cpuInventory({ region: 'my-own-region-42' })), 400, 'region_not_allowed');
    expect(w.state()).toEqual(before);
    await w.close();
  });
});

describe('dead nodes expire', () => {
  it('removes a node unseen for the expiry period; one that keeps heartbeating stays', async () => {
    const w = world('token', { nodeExpiryMs: 7 * day });
    const { secret } = await w.token({ operator: 'acme', maxUses: 5, ttlSeconds: 30 * 24 * 3600 });
    const dead = w.node();
    const alive = w.node();
    expect((await dead.register(cpuInventory(), secret)).status).toBe(201);
    expect((await alive.register(cpuInventory(), secret)).status).toBe(201);

    for (let i = 0; i < 8; i++) {
      w.clock.advance(day);
      const heartbeat = await alive.call('POST', `/v1/nodes/${alive.id}/heartbeat`, { tasks: [] });
      expect(heartbeat.status).toBe(200);
    }
    expect((await w.cp.nodes.list(50)).nodes.map((n) => n.id)).toEqual([alive.id]);
    await expectError(await w.api(`/v1/nodes/${dead.id}`), 404, 'node_not_found');
    await expectError(await dead.call('POST', `/v1/nodes/${dead.id}/heartbeat`, { tasks: [] }), 401, 'unknown_node');
    // It must enroll again: its key alone no longer registers it.
    await expectError(await dead.register(), 401, 'join_token_required');
    expect((await dead.register(cpuInventory(), secret)).status).toBe(201);
    await w.close();
  });
});
