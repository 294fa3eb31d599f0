import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { limits } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';

/** Body and field size limits: every value a client sends is bounded, and a body over the limit is 413. */
type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;
beforeEach(() => {
  h = inProcessControlPlane();
});
afterEach(async () => {
  await h.close();
});

interface Schema {
  type?: string | string[];
  maxLength?: number;
  maxItems?: number;
  maxProperties?: number;
  pattern?: string;
  enum?: unknown[];
  const?: unknown;
  format?: string;
  $ref?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  propertyNames?: Schema;
  items?: Schema;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
}

/** A regex bounds its match when it is anchored and has no unbounded repetition (outside character classes). */
const boundedPattern = (pattern: string) => {
  const outsideClasses = pattern.replace(/\[(?:\\.|[^\]])*\]/g, 'c');
  return pattern.startsWith('^') && pattern.endsWith('$') && !/(?<!\\)[*+]|\{\d+,\}/.test(outsideClasses);
};

/** Paths (in the document) of strings, arrays and maps that have no upper bound. */
function unbounded(schema: Schema, at: string, components: Record<string, Schema>, seen = new Set<string>()): string[] {
  if (schema.$ref !== undefined) {
    const name = schema.$ref.split('/').at(-1) ?? '';
    if (seen.has(name)) return [];
    return unbounded(components[name] ?? {}, at, components, new Set([...seen, name]));
  }
  const found: string[] = [];
  for (const sub of [...(schema.anyOf ?? []), ...(schema.oneOf ?? []), ...(schema.allOf ?? [])]) {
    found.push(...unbounded(sub, at, components, seen));
  }
  const types = Array.isArray(schema.type) ? schema.type : [schema.type];
  if (types.includes('string') && schema.enum === undefined && schema.const === undefined) {
    if (schema.maxLength === undefined && !(schema.pattern !== undefined && boundedPattern(schema.pattern))) {
      found.push(`${at} (string)`);
    }
  }
  if (types.includes('array')) {
    if (schema.maxItems === undefined) found.push(`${at} (array)`);
    if (schema.items !== undefined) found.push(...unbounded(schema.items, `${at}[]`, components, seen));
  }
  for (const [name, property] of Object.entries(schema.properties ?? {})) {
    found.push(...unbounded(property, `${at}.${name}`, components, seen));
  }
  if (typeof schema.additionalProperties === 'object') {
    // A map: its size must be bounded by the body limit at least; its keys and values by their schemas.
    found.push(...unbounded(schema.additionalProperties, `${at}{}`, components, seen));
    if (schema.propertyNames !== undefined)
      found.push(...unbounded(schema.propertyNames, `${at}{key}`, components, seen));
  }
  return found;
}

describe('request size limits', () => {
  it('bounds every string and array of every request body, query and path parameter in the OpenAPI document', async () => {
    const doc = (await (await h.request('/openapi.json')).json()) as {
      paths: Record<
        string,
        Record<
          string,
          {
            requestBody?: { content: Record<string, { schema: Schema }> };
            parameters?: { name: string; in: string; schema: Schema }[];
          }
        >
      >;
      components: { schemas: Record<string, Schema> };
    };
    const problems: string[] = [];
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const route = `${method.toUpperCase()} ${path}`;
        const body = operation.requestBody?.content['application/json']?.schema;
        if (body !== undefined) problems.push(...unbounded(body, `${route} body`, doc.components.schemas));
        for (const parameter of operation.parameters ?? []) {
          if (parameter.in === 'header') continue;
          problems.push(
            ...unbounded(parameter.schema, `${route} ${parameter.in} ${parameter.name}`, doc.components.schemas),
          );
        }
      }
    }
    expect(problems).toEqual([]);
  });

  it('refuses a body over the limit with 413 before reading it all, on application and agent routes alike', async () => {
    const big = JSON.stringify({ command: ['echo', 'x'.repeat(limits.maxBodyBytes)] });
    const job = await h.api('/v1/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: big });
    expect(job.status).toBe(413);
    expect(((await job.json()) as { error: { code: string } }).error.code).toBe('body_too_large');

    const node = new TestNode(h.request);
    const register = await node.call('POST', '/v1/nodes', { padding: 'x'.repeat(limits.maxBodyBytes) });
    expect(register.status).toBe(413);
    const list = (await (await h.api('/v1/nodes')).json()) as { nodes: unknown[] };
    expect(list.nodes).toEqual([]);
  });

  it('documents 413 on every route that takes a body', async () => {
    const doc = (await (await h.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { requestBody?: unknown; responses: Record<string, unknown> }>>;
    };
    const missing = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops)
        .filter(([, op]) => op.requestBody !== undefined && op.responses['413'] === undefined)
        .map(([method]) => `${method.toUpperCase()} ${path}`),
    );
    expect(missing).toEqual([]);
  });
});
