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
  it('serialises equal values to equal strings whatever the key order', () => {
    fc.assert(
      fc.property(fc.dictionary(fc.string(), fc.jsonValue()), (value) => {
        const reversed = Object.fromEntries(Object.entries(value).reverse());
        expect(canonicalJson(reversed)).toBe(canonicalJson(value));
        expect(JSON.parse(canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)));
      }),
    );
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
