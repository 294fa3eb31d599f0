import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  canonicalJson,
  canonicalRequest,
  EnvelopeError,
  generateNodeKeyPair,
  JobSpec,
  loadNodeKeyPair,
  nodeIdFromPublicKey,
  openEnvelope,
  parseTaskId,
  resultHash,
  sealEnvelope,
  sha256Hex,
  signatureHeaders,
  signRequest,
  taskIdOf,
  verifySignature,
} from '../../protocol/index.js';

describe('envelope', () => {
  const key = randomBytes(32);
  it('opens what it sealed, only with the same context', () => {
    const sealed = sealEnvelope(key, Buffer.from('secret'), 'job_1');
    expect(openEnvelope(key, sealed, 'job_1').toString()).toBe('secret');
    expect(() => openEnvelope(key, sealed, 'job_2')).toThrow(EnvelopeError);
    expect(() => openEnvelope(randomBytes(32), sealed, 'job_1')).toThrow(EnvelopeError);
  });
  it('refuses a truncated authentication tag', () => {
    const sealed = sealEnvelope(key, Buffer.from('secret'), 'ctx');
    expect(() => openEnvelope(key, sealed.slice(0, -4), 'ctx')).toThrow(EnvelopeError);
  });
});

describe('result hash', () => {
  it('is the sha-256 of a sorted output manifest, whatever order outputs come in', () => {
    const outputs = [
      { name: 'stdout', sha256: sha256Hex('hello\n'), bytes: 6 },
      { name: 'out/model.bin', sha256: sha256Hex('weights'), bytes: 7 },
    ];
    const manifest = `${sha256Hex('weights')} 7 out/model.bin\n${sha256Hex('hello\n')} 6 stdout\n`;
    expect(resultHash(outputs)).toBe(sha256Hex(manifest));
    expect(resultHash([...outputs].reverse())).toBe(resultHash(outputs));
  });
});

describe('canonical JSON', () => {
  /** The same value with the keys of every object, at every depth, in another order (picked by `seed`). */
  const reorder = (value: unknown, seed: number): unknown => {
    if (Array.isArray(value)) return value.map((item, i) => reorder(item, seed + i + 1));
    if (value === null || typeof value !== 'object') return value;
    const entries = Object.entries(value);
    const shift = seed % Math.max(1, entries.length);
    const rotated = [...entries.slice(shift), ...entries.slice(0, shift)];
    const ordered = seed % 2 === 0 ? rotated.reverse() : rotated;
    return Object.fromEntries(ordered.map(([k, v], i) => [k, reorder(v, seed + i + 1)]));
  };
  // JavaScript puts integer-like keys first in its own order, whatever the insertion order: keys
  // here are never integer-like, so that reordering really changes the order a serialiser sees.
  const key = fc.string({ minLength: 1, maxLength: 4 }).filter((k) => !/^(0|[1-9]\d*)$/.test(k));
  const leaf = fc.oneof(fc.string({ maxLength: 3 }), fc.integer(), fc.boolean(), fc.constant(null));
  // Objects of several keys inside objects and arrays, a few levels down.
  const { object } = fc.letrec<{ value: unknown; object: Record<string, unknown>; array: unknown[] }>((tie) => ({
    value: fc.oneof({ depthSize: 'small', maxDepth: 4 }, leaf, tie('object'), tie('array')),
    object: fc.dictionary(key, tie('value'), { minKeys: 2, maxKeys: 4 }),
    array: fc.array(tie('value'), { maxLength: 3 }),
  }));
  const sameTextWhateverTheOrder = (serialise: (value: unknown) => string) =>
    fc.property(object, fc.nat(), (value, seed) => {
      expect(serialise(reorder(value, seed))).toBe(serialise(value));
      expect(JSON.parse(serialise(value))).toEqual(value);
    });

  it('serialises equal values to equal strings whatever the key order, at every depth', () => {
    fc.assert(sameTextWhateverTheOrder(canonicalJson), { numRuns: 300 });
  });

  it('is a property that a key sort of the top level only fails', () => {
    const topLevelSort = (value: unknown) =>
      JSON.stringify(Object.fromEntries(Object.entries(value as object).sort(([a], [b]) => (a < b ? -1 : 1))));
    expect(fc.check(sameTextWhateverTheOrder(topLevelSort), { numRuns: 300 }).failed).toBe(true);
  });
});

describe('request signing', () => {
  const pair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
  const nodeId = nodeIdFromPublicKey(pair.publicKey);
  const req = { method: 'POST', pathWithQuery: `/v1/nodes/${nodeId}/heartbeat`, body: '{"tasks":[]}' };

  it('derives a stable node id from the public key', () => {
    expect(nodeId).toMatch(/^node_[a-z2-7]{26}$/);
    expect(nodeIdFromPublicKey(pair.publicKey)).toBe(nodeId);
  });

  it('verifies the exact request and nothing else', () => {
    const h = signRequest(pair, nodeId, req, 1_700_000_000_000);
    const date = Number(h[signatureHeaders.date]);
    const nonce = h[signatureHeaders.nonce] as string;
    const sig = h[signatureHeaders.signature] as string;
    expect(
      verifySignature(pair.publicKey, canonicalRequest('POST', req.pathWithQuery, date, nonce, req.body), sig),
    ).toBe(true);
    for (const [method, path, body] of [
      ['GET', req.pathWithQuery, req.body],
      ['POST', `${req.pathWithQuery}?x=1`, req.body],
      ['POST', req.pathWithQuery, '{"tasks":[1]}'],
    ] as const) {
      expect(verifySignature(pair.publicKey, canonicalRequest(method, path, date, nonce, body), sig)).toBe(false);
    }
    const other = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    expect(
      verifySignature(other.publicKey, canonicalRequest('POST', req.pathWithQuery, date, nonce, req.body), sig),
    ).toBe(false);
    expect(verifySignature(pair.publicKey, 'x', 'not base64')).toBe(false);
  });
});

describe('job spec', () => {
  it('fills defaults and refuses unknown fields', () => {
    const spec = JobSpec.parse({ command: ['true'] });
    expect(spec).toMatchObject({ tasks: 1, retries: 2, env: {}, workload: 'batch', verification: { mode: 'none' } });
    expect(spec.resources.gpus.count).toBe(0);
    expect(JobSpec.safeParse({ command: ['true'], extra: 1 }).success).toBe(false);
  });
  it('round-trips task ids', () => {
    const id = taskIdOf('job_01JD7Z5C2Q9W8V6T4R2P0N8M6K', 12);
    expect(parseTaskId(id)).toEqual({ jobId: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K', index: 12 });
  });
});
