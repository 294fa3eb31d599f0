import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signRequest } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';
import { assignedTask, submitJob } from './support.js';

/**
 * Route fuzzing (fast-check) against every operation of the served OpenAPI document, in-process:
 * random JSON bodies (and some that are not JSON), random query strings and path parameters,
 * random and real ids, with no credentials, a wrong key, the admin key and a valid node signature.
 * Whatever comes in: never a 5xx, never a stack trace, every error in the one error shape, and
 * every status one the document lists for that operation.
 */

interface Operation {
  method: string;
  template: string;
  statuses: Set<number>;
  signed: boolean;
  hasBody: boolean;
  queryNames: string[];
}

// Rate limits off: the fuzzer sends thousands of requests from one key and one node.
const off = { limit: 0, windowSeconds: 60 };
const h = inProcessControlPlane({
  settings: { rateLimits: { address: off, key: off, node: off, register: off, registerGlobal: off } },
});
const node = new TestNode(h.request);
let operations: Operation[] = [];
/** Real ids, so that some requests reach the logic behind "not found". */
const real = { jobId: '', taskId: '', nodeId: '', keyId: '' };

beforeAll(async () => {
  await h.ready;
  const { job, assignment } = await assignedTask(h, node);
  await submitJob(h, { command: ['echo', 'x'], tasks: 2, env: { SECRET: 'fuzz-secret-value' } });
  real.jobId = job.id;
  real.taskId = assignment.taskId;
  real.nodeId = node.id;
  real.keyId = h.adminKey.split('_')[1] ?? '';
  const doc = (await (await h.request('/openapi.json')).json()) as {
    paths: Record<
      string,
      Record<
        string,
        {
          responses: Record<string, unknown>;
          security?: Record<string, unknown>[];
          requestBody?: unknown;
          parameters?: { in: string; name: string }[];
        }
      >
    >;
  };
  operations = Object.entries(doc.paths).flatMap(([template, item]) =>
    Object.entries(item).map(([method, op]) => ({
      method: method.toUpperCase(),
      template,
      statuses: new Set(Object.keys(op.responses).map(Number)),
      signed: (op.security ?? []).some((s) => 'nodeSignature' in s),
      hasBody: op.requestBody !== undefined,
      queryNames: (op.parameters ?? []).filter((p) => p.in === 'query').map((p) => p.name),
    })),
  );
  expect(operations.length).toBeGreaterThan(10);
});
afterAll(() => h.close());

/** Strings that tend to break parsers, ids and SQL. */
const nasty = fc.constantFrom(
  '',
  ' ',
  '0',
  '-1',
  '1e309',
  'NaN',
  'null',
  'true',
  '[]',
  '{}',
  '__proto__',
  'constructor',
  '../../etc/passwd',
  '%00',
  '\u0000',
  '\u202e',
  "' OR 1=1 --",
  '$' + '{jndi:ldap://x}',
  '<script>',
  'job_00000000000000000000000000',
  'job_00000000000000000000000000.999',
  'node_aaaaaaaaaaaaaaaaaaaaaaaaaa',
  'x'.repeat(600),
);

const pathValue = (name: string) =>
  fc.oneof(
    fc.constant(
      name === 'jobId'
        ? real.jobId
        : name === 'taskId'
          ? real.taskId
          : name === 'nodeId'
            ? real.nodeId
            : name === 'keyId'
              ? real.keyId
              : 'x',
    ),
    nasty,
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.stringMatching(/^[a-z]{3,5}_[0-9A-Z]{26}$/),
  );

const queryValue = fc.oneof(nasty, fc.string({ maxLength: 30 }), fc.integer().map(String), fc.double().map(String));

const jsonBody = fc.oneof(
  fc.jsonValue({ maxDepth: 4 }),
  // Objects shaped like the API's bodies, with real field names and random values.
  fc.dictionary(
    fc.constantFrom(
      'command',
      'tasks',
      'env',
      'resources',
      'gpus',
      'attempt',
      'outputs',
      'resultHash',
      'exitCode',
      'metrics',
      'publicKey',
      'inventory',
      'scopes',
      'tenant',
      'owner',
      'status',
      'nodeId',
      'taskId',
      'queueUrl',
      'receiptHandle',
      'nonce',
      'evidence',
      'joinToken',
      'minAttestation',
      'deadline',
      'expiresAt',
      'ttl',
      '__proto__',
    ),
    fc.jsonValue({ maxDepth: 3 }),
    { maxKeys: 8 },
  ),
);

const rawBody = fc.oneof(
  jsonBody.map((v) => JSON.stringify(v)),
  fc.string({ maxLength: 200 }),
  fc.constantFrom('{', '{"a":', '[1,2', '\u0000', '{"command":["x"]}garbage', 'null', '"\\ud800"'),
);

type Auth = 'none' | 'admin' | 'wrong-key' | 'signed' | 'signed-as-other';
const auth = fc.constantFrom<Auth>('none', 'admin', 'wrong-key', 'signed', 'signed-as-other');

const names = (template: string) => template.match(/\{(\w+)\}/g)?.map((m) => m.slice(1, -1)) ?? [];

/** One request to one operation: its parameters, a query, a body, a content type and credentials. */
const requestTo = (op: Operation) =>
  fc.record({
    op: fc.constant(op),
    values: fc.record(
      Object.fromEntries(names(op.template).map((n) => [n, pathValue(n)])) as Record<string, fc.Arbitrary<string>>,
    ),
    query: fc.array(
      fc.tuple(
        fc.oneof(
          fc.constantFrom('limit', 'cursor', 'status', 'wait', 'tenant', ...op.queryNames),
          fc.string({ maxLength: 8 }),
        ),
        queryValue,
      ),
      { maxLength: 4 },
    ),
    body: fc.option(rawBody, { nil: undefined, freq: 5 }),
    contentType: fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', undefined),
    auth,
  });

/** Fills the template's parameters, encoded as a client would. */
function build(op: Operation, values: Record<string, string>, query: [string, string][]): string {
  const path = op.template.replace(/\{(\w+)\}/g, (_, name: string) => encodeURIComponent(values[name] ?? 'x'));
  // A valid `wait` holds a long poll open for up to 20 s when no task fits: keep the runs fast.
  const fast = query.map(([k, v]): [string, string] => [k, k === 'wait' && /^\s*\+?0*[1-9]\d?\s*$/.test(v) ? '0' : v]);
  const search = new URLSearchParams(fast).toString();
  return search === '' ? path : `${path}?${search}`;
}

async function send(
  op: Operation,
  path: string,
  body: string | undefined,
  contentType: string | undefined,
  how: Auth,
): Promise<Response> {
  const headers: Record<string, string> = contentType === undefined ? {} : { 'content-type': contentType };
  if (how === 'admin') headers.authorization = `Bearer ${h.adminKey}`;
  if (how === 'wrong-key') headers.authorization = `Bearer gpk_${'a'.repeat(20)}_${'A'.repeat(43)}`;
  if (how === 'signed' || how === 'signed-as-other') {
    const as = how === 'signed' ? node.id : `node_${'b'.repeat(26)}`;
    Object.assign(headers, signRequest(node.key, as, { method: op.method, pathWithQuery: path, body: body ?? '' }));
  }
  const method = op.method;
  const sendsBody = body !== undefined && method !== 'GET' && method !== 'HEAD';
  return h.request(path, { method, headers, ...(sendsBody ? { body } : {}) });
}

/** The checks every response passes. */
async function check(response: Response, allowed: Set<number>, what: string): Promise<void> {
  const text = await response.text();
  const where = `${what} -> ${response.status} ${text.slice(0, 300)}`;
  expect(response.status, where).toBeLessThan(500);
  expect(allowed.has(response.status), `${where}; documented: ${[...allowed].join(', ')}`).toBe(true);
  expect(text, where).not.toMatch(/\bat [^\s]+\.(ts|js):\d+|node_modules|TypeError|ReferenceError|SyntaxError: /);
  if (response.status >= 400) {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    expect(typeof body.error?.code, where).toBe('string');
    expect(typeof body.error?.message, where).toBe('string');
  }
  expect(text, where).not.toContain('fuzz-secret-value');
}

describe('route fuzzing', () => {
  it('answers every operation with a documented status, never a 5xx, always the one error shape', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...operations).chain(requestTo), async (r) => {
        const path = build(r.op, r.values, r.query);
        const body = r.op.hasBody ? r.body : undefined;
        const response = await send(r.op, path, body, r.contentType, r.auth);
        await check(response, r.op.statuses, `${r.op.method} ${path} (${r.auth}) body=${String(body).slice(0, 120)}`);
      }),
      { numRuns: 500 },
    );
  }, 120_000);

  it('answers unknown paths and methods with 404 or 405 (or 401 under a node), in the one error shape', async () => {
    const segment = fc.oneof(
      fc.constantFrom('v1', 'jobs', 'nodes', 'keys', 'tasks', 'work', 'admin', '..', '.', '%2e%2e', 'openapi.json'),
      fc.string({ minLength: 1, maxLength: 12 }).map(encodeURIComponent),
    );
    const method = fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'PROPFIND');
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 6 }), method, auth, async (segments, m, how) => {
        const path = `/${segments.join('/')}`;
        const known = operations.find(
          (op) =>
            op.method === m &&
            new RegExp(`^${op.template.replace(/\{\w+\}/g, '[^/]+')}$`).test(new URL(path, 'http://x').pathname),
        );
        const op: Operation = known ?? {
          method: m,
          template: path,
          statuses: new Set(),
          signed: false,
          hasBody: false,
          queryNames: [],
        };
        const response = await send(op, path, m === 'GET' ? undefined : '{}', 'application/json', how);
        const allowed = known?.statuses ?? new Set([401, 403, 404, 405]);
        if (known === undefined && new URL(path, 'http://x').pathname === '/healthz') allowed.add(200);
        if (known === undefined && new URL(path, 'http://x').pathname === '/openapi.json') allowed.add(200);
        await check(response, allowed, `${m} ${path} (${how})`);
      }),
      { numRuns: 300 },
    );
  }, 120_000);
});
