import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readOidcOptions } from '../../functions/handlers/config.js';
import { createApp } from '../../functions/http/app.js';
import type { ApiKeyList, CreatedApiKey, JobWithTasks } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock } from '../support/in-process.js';

/** Tenants and API keys over HTTP: who may call what, and that a refusal changes nothing. */

type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;
let clock: ManualClock;

beforeEach(() => {
  clock = new ManualClock();
  h = inProcessControlPlane({ clock });
});
afterEach(async () => {
  await h.close();
});

const json = (body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method: 'POST',
  headers: { 'content-type': 'application/json', ...headers },
  body: JSON.stringify(body),
});

async function expectError(response: Response, status: number, code: string) {
  const body = (await response.json()) as { error: { code: string; message: string; details?: unknown } };
  expect({ status: response.status, code: body.error.code }).toEqual({ status, code });
  expect(body.error.message.length).toBeGreaterThan(0);
  return body.error;
}

const submitAs = async (key: string, spec: unknown = { command: ['true'] }, headers: Record<string, string> = {}) => {
  const response = await h.api('/v1/jobs', json(spec, headers), key);
  expect(response.status).toBe(201);
  return (await response.json()) as JobWithTasks;
};

const applicationRoutes = (jobId: string, nodeId: string) =>
  [
    ['POST', '/v1/jobs', { command: ['true'] }],
    ['GET', '/v1/jobs', undefined],
    ['GET', `/v1/jobs/${jobId}`, undefined],
    ['GET', `/v1/jobs/${jobId}/tasks`, undefined],
    ['POST', `/v1/jobs/${jobId}/cancel`, undefined],
    ['GET', '/v1/nodes', undefined],
    ['GET', `/v1/nodes/${nodeId}`, undefined],
    ['POST', '/v1/keys', { tenant: 'acme' }],
    ['GET', '/v1/keys', undefined],
    ['DELETE', `/v1/keys/${'a'.repeat(20)}`, undefined],
  ] as const;

const init = (method: string, body: unknown, headers: Record<string, string>): RequestInit => ({
  method,
  headers: { ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
  ...(body === undefined ? {} : { body: JSON.stringify(body) }),
});

describe('application routes need an API key', () => {
  it('answers 401 without a key, with a bad one or a malformed header, before validating anything', async () => {
    const job = await submitAs(h.adminKey);
    const before = h.snapshot();
    const realId = h.adminKey.slice(4, 24);
    const cases: [Record<string, string>, string][] = [
      [{}, 'missing_api_key'],
      [{ authorization: '' }, 'missing_api_key'],
      [{ authorization: `Basic ${Buffer.from('a:b').toString('base64')}` }, 'invalid_api_key'],
      [{ authorization: 'Bearer not-a-key' }, 'invalid_api_key'],
      [{ authorization: `Bearer gpk_${realId}_${'A'.repeat(43)}` }, 'invalid_api_key'],
      [{ authorization: `Bearer ${h.adminKey}x` }, 'invalid_api_key'],
    ];
    for (const [method, path, body] of applicationRoutes(job.id, `node_${'a'.repeat(26)}`)) {
      for (const [headers, code] of cases) {
        const response = await h.request(path, init(method, body, headers));
        expect(response.headers.get('www-authenticate')).toBe('Bearer realm="gpuai"');
        await expectError(response, 401, code);
      }
      // An invalid request still gets the 401: nobody learns the schema without a key.
      const invalid =
        method === 'POST'
          ? h.request(path, init(method, { nonsense: true }, {}))
          : h.request(`${path}?limit=0&x=1`, { method });
      await expectError(await invalid, 401, 'missing_api_key');
    }
    expect(h.snapshot()).toEqual(before);
  });

  it('answers 403 insufficient_scope for a key without the scope, and changes nothing', async () => {
    const reader = await h.createKey('default', ['read']);
    const submitter = await h.createKey('default', ['submit']);
    const job = await submitAs(submitter);
    const before = h.snapshot();

    const refused = await expectError(
      await h.api('/v1/jobs', json({ command: ['true'] }), reader),
      403,
      'insufficient_scope',
    );
    expect(refused.details).toEqual({ required: 'submit', granted: ['read'] });
    await expectError(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, reader), 403, 'insufficient_scope');
    await expectError(await h.api(`/v1/jobs/${job.id}`, {}, submitter), 403, 'insufficient_scope');
    await expectError(await h.api('/v1/nodes', {}, submitter), 403, 'insufficient_scope');
    await expectError(await h.api('/v1/keys', json({ scopes: ['admin'] }), submitter), 403, 'insufficient_scope');
    await expectError(await h.api('/v1/keys', {}, reader), 403, 'insufficient_scope');
    expect(h.snapshot()).toEqual(before);

    expect((await h.api(`/v1/jobs/${job.id}`, {}, reader)).status).toBe(200);
    expect((await h.api('/v1/nodes', {}, reader)).status).toBe(200);
  });
});

describe('tenants', () => {
  it("gives another tenant 404 for a job: get, tasks (logs), cancel; and lists only the caller's jobs", async () => {
    const alice = await h.createKey('alice');
    const bob = await h.createKey('bob');
    const job = await submitAs(alice, { command: ['true'], env: { TOKEN: 'hunter2' } });
    const before = h.snapshot();

    await expectError(await h.api(`/v1/jobs/${job.id}`, {}, bob), 404, 'job_not_found');
    await expectError(await h.api(`/v1/jobs/${job.id}/tasks`, {}, bob), 404, 'job_not_found');
    await expectError(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, bob), 404, 'job_not_found');
    const bobs = (await (await h.api('/v1/jobs', {}, bob)).json()) as { jobs: unknown[] };
    expect(bobs.jobs).toEqual([]);
    // The admin key is network-wide for keys, not for jobs: it sees its own tenant's only.
    await expectError(await h.api(`/v1/jobs/${job.id}`), 404, 'job_not_found');
    expect(h.snapshot()).toEqual(before);

    const alices = (await (await h.api('/v1/jobs', {}, alice)).json()) as { jobs: { id: string }[] };
    expect(alices.jobs.map((j) => j.id)).toEqual([job.id]);
    expect((await h.api(`/v1/jobs/${job.id}/tasks`, {}, alice)).status).toBe(200);
  });

  it("scopes Idempotency-Keys per tenant: the same key from another tenant is that tenant's own job", async () => {
    const alice = await h.createKey('alice');
    const bob = await h.createKey('bob');
    const a = await submitAs(alice, { command: ['true'] }, { 'idempotency-key': 'order-1' });
    const b = await submitAs(bob, { command: ['true'] }, { 'idempotency-key': 'order-1' });
    expect(b.id).not.toBe(a.id);
    // And another body under bob's key is bob's conflict, naming bob's job only.
    const conflict = await expectError(
      await h.api('/v1/jobs', json({ command: ['false'] }, { 'idempotency-key': 'order-1' }), bob),
      409,
      'idempotency_key_reused',
    );
    expect(conflict.details).toEqual({ jobId: b.id });
  });
});

describe('/v1/keys', () => {
  it('creates a key shown once, which then works with its scopes, lists without secrets, revokes', async () => {
    const response = await h.api(
      '/v1/keys',
      json({ tenant: 'acme', scopes: ['submit', 'read'], name: 'ci', ttl: '30d' }),
    );
    expect(response.status).toBe(201);
    const created = (await response.json()) as CreatedApiKey;
    expect(created).toMatchObject({ tenant: 'acme', scopes: ['submit', 'read'], name: 'ci', status: 'active' });
    expect(Date.parse(created.expiresAt as string)).toBe(clock.now() + 30 * 86_400_000);

    const job = await submitAs(created.key);
    expect((await h.api(`/v1/jobs/${job.id}`, {}, created.key)).status).toBe(200);

    const listed = await h.api('/v1/keys?tenant=acme');
    const text = await listed.text();
    const secret = created.key.slice(25);
    expect(text).not.toContain(secret);
    expect(text).not.toMatch(/secretHash|[0-9a-f]{64}/);
    expect((JSON.parse(text) as ApiKeyList).keys.map((k) => k.id)).toEqual([created.id]);
    const all = (await (await h.api('/v1/keys')).json()) as ApiKeyList;
    expect(all.keys.map((k) => k.tenant).sort()).toEqual(['acme', 'default']);

    const revoked = await h.api(`/v1/keys/${created.id}`, { method: 'DELETE' });
    expect(revoked.status).toBe(200);
    expect(((await revoked.json()) as { status: string }).status).toBe('revoked');
    const before = h.snapshot();
    await expectError(await h.api('/v1/jobs', json({ command: ['true'] }), created.key), 401, 'api_key_revoked');
    await expectError(
      await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, created.key),
      401,
      'api_key_revoked',
    );
    expect(h.snapshot()).toEqual(before);
  });

  it('refuses an expired key, and the job stays as it was', async () => {
    const key = await h.createKey('acme', ['submit', 'read'], { expiresAt: clock.now() + 60_000 });
    const job = await submitAs(key);
    clock.advance(60_000);
    const before = h.snapshot();
    await expectError(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }, key), 401, 'api_key_expired');
    await expectError(await h.api('/v1/jobs', json({ command: ['true'] }), key), 401, 'api_key_expired');
    expect(h.snapshot()).toEqual(before);
  });

  it('answers 400 for bad requests and 404 for an unknown key, changing nothing', async () => {
    const before = h.snapshot();
    await expectError(
      await h.api('/v1/keys', json({ ttl: '30d', expiresAt: '2030-01-01T00:00:00Z' })),
      400,
      'validation_failed',
    );
    await expectError(await h.api('/v1/keys', json({ scopes: ['root'] })), 400, 'validation_failed');
    await expectError(await h.api('/v1/keys', json({ tenant: 'a#b' })), 400, 'validation_failed');
    await expectError(await h.api('/v1/keys', json({ secretHash: 'x' })), 400, 'validation_failed');
    await expectError(await h.api('/v1/keys', json({ name: 'ci\u001b[2J' })), 400, 'validation_failed');
    await expectError(await h.api('/v1/keys', json({ expiresAt: '2020-01-01T00:00:00Z' })), 400, 'expiry_in_past');
    await expectError(await h.api(`/v1/keys/${'a'.repeat(20)}`, { method: 'DELETE' }), 404, 'api_key_not_found');
    await expectError(await h.api('/v1/keys/nope', { method: 'DELETE' }), 400, 'validation_failed');
    expect(h.snapshot()).toEqual(before);
  });
});

describe('OIDC principals (cloud: API Gateway JWT authorizer)', () => {
  const event = (claims: Record<string, unknown>) => ({
    event: { requestContext: { authorizer: { jwt: { claims } } } },
  });

  it("takes tenant and gpuai:* scopes from the authorizer's claims in the Lambda event", async () => {
    const app = createApp({ cp: h.cp, log: () => {}, oidc: { tenantClaim: 'org' } });
    await h.ready;
    const claims = { sub: 'user-1', org: 'acme', scope: 'openid gpuai:submit gpuai:read other:admin' };
    const submitted = await app.request('http://gpuai.test/v1/jobs', json({ command: ['true'] }), event(claims));
    expect(submitted.status).toBe(201);
    const job = (await submitted.json()) as JobWithTasks;
    const acme = await h.createKey('acme', ['read']);
    expect((await h.api(`/v1/jobs/${job.id}`, {}, acme)).status).toBe(200);

    await expectError(
      await app.request('http://gpuai.test/v1/keys', {}, event({ ...claims, scope: 'gpuai:read' })),
      403,
      'insufficient_scope',
    );
    await expectError(
      await app.request('http://gpuai.test/v1/jobs', {}, event({ scope: 'gpuai:read' })),
      401,
      'invalid_token_claims',
    );
    // API keys keep working where no authorizer ran.
    expect(
      (await app.request('http://gpuai.test/v1/jobs', { headers: { authorization: `Bearer ${acme}` } })).status,
    ).toBe(200);
  });

  it('names the tenant claim with GPUAI_OIDC_TENANT_CLAIM (default sub) in the API Lambda', () => {
    expect(readOidcOptions({})).toEqual({ tenantClaim: 'sub' });
    expect(readOidcOptions({ GPUAI_OIDC_TENANT_CLAIM: 'https://gpuai.example.com/tenant' })).toEqual({
      tenantClaim: 'https://gpuai.example.com/tenant',
    });
    expect(() => readOidcOptions({ GPUAI_OIDC_TENANT_CLAIM: 'two words' })).toThrow(/GPUAI_OIDC_TENANT_CLAIM/);
  });

  it('ignores claims unless the deployment turned OIDC on: the embedded server never reads them', async () => {
    const claims = { sub: 'acme', scope: 'gpuai:admin' };
    await expectError(await h.app.request('http://gpuai.test/v1/jobs', {}, event(claims)), 401, 'missing_api_key');
  });
});

describe('OpenAPI', () => {
  it('documents the bearer scheme and puts it on every application route, not on agent routes', async () => {
    const doc = (await (await h.request('/openapi.json')).json()) as {
      components: { securitySchemes: Record<string, { type: string; scheme?: string }> };
      paths: Record<
        string,
        Record<string, { security?: Record<string, unknown>[]; responses: Record<string, unknown> }>
      >;
    };
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: 'http', scheme: 'bearer' });
    const application = [
      ['/v1/jobs', 'post'],
      ['/v1/jobs', 'get'],
      ['/v1/jobs/{jobId}', 'get'],
      ['/v1/jobs/{jobId}/tasks', 'get'],
      ['/v1/jobs/{jobId}/cancel', 'post'],
      ['/v1/nodes', 'get'],
      ['/v1/nodes/{nodeId}', 'get'],
      ['/v1/keys', 'post'],
      ['/v1/keys', 'get'],
      ['/v1/keys/{keyId}', 'delete'],
    ] as const;
    for (const [path, method] of application) {
      const operation = doc.paths[path]?.[method];
      expect(operation?.security, `${method} ${path}`).toEqual([{ apiKey: [] }]);
      expect(Object.keys(operation?.responses ?? {}), `${method} ${path}`).toEqual(
        expect.arrayContaining(['401', '403']),
      );
    }
    expect(doc.paths['/v1/nodes']?.post?.security).toEqual([{ nodeSignature: [] }]);
  });
});
