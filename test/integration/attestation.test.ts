import { generateKeyPairSync, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import { nodeKey } from '../../functions/domain/resource/node-record.js';
import { toNodeAttestationView } from '../../functions/domain/security/attestation/record.js';
import { defaultAttestationSettings } from '../../functions/domain/security/attestation/settings.js';
import type { AttestationChallenge, JobSpecInput, MeasurementEvidence } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

const measurement: MeasurementEvidence = {
  type: 'agent-measurement',
  agentVersion: '0.1.0',
  bundleSha256: 'a'.repeat(64),
  configSha256: 'b'.repeat(64),
  files: 42,
};

function world() {
  // The node view's route reads the wall clock: start the manual one there.
  const clock = new ManualClock(Date.now());
  const h = inProcessControlPlane({
    clock,
    settings: { attestation: { ...defaultAttestationSettings, validityMs: 60_000, challengeTtlMs: 10_000 } },
  });
  const newNode = async () => {
    const node = new TestNode(h.request, clock);
    expect((await node.register()).status).toBe(201);
    return node;
  };
  const challenge = async (node: TestNode): Promise<AttestationChallenge> => {
    const res = await node.call('POST', `/v1/nodes/${node.id}/attestation/challenge`, {});
    expect(res.status).toBe(201);
    return (await res.json()) as AttestationChallenge;
  };
  const answer = (node: TestNode, body: unknown) => node.call('POST', `/v1/nodes/${node.id}/attestation`, body);
  const attest = async (node: TestNode) => {
    const { nonce } = await challenge(node);
    const res = await answer(node, { nonce, evidence: [measurement] });
    expect(res.status).toBe(200);
    return res.json();
  };
  const record = async (node: TestNode) => (await h.store.get<NodeRecord>(nodeKey(node.id)))?.data;
  const submit = async (spec: JobSpecInput): Promise<string> => {
    const res = await h.api('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(spec),
    });
    expect(res.status).toBe(201);
    const { id } = (await res.json()) as { id: string };
    await h.cp.scheduler.schedule({ jobId: id });
    return id;
  };
  const taskState = async (jobId: string) => (await h.cp.jobs.get('default', jobId)).tasks[0]?.state;
  const errorCode = async (res: Response) => ((await res.json()) as { error: { code: string } }).error.code;
  return { ...h, clock, newNode, challenge, answer, attest, record, submit, taskState, errorCode };
}

describe('attestation challenges and the measured level', () => {
  it('records measured with an expiry and shows it in the node view', async () => {
    const w = world();
    const node = await w.newNode();
    const result = await w.attest(node);
    expect(result).toMatchObject({
      nodeId: node.id,
      level: 'measured',
      evidence: ['agent-measurement'],
      expiresAt: new Date(w.clock.now() + 60_000).toISOString(),
    });
    const view = (await (await w.api(`/v1/nodes/${node.id}`)).json()) as { attestation: unknown };
    expect(view.attestation).toEqual({ level: 'measured', expiresAt: new Date(w.clock.now() + 60_000).toISOString() });
    expect((await w.record(node))?.attestation?.measurement?.bundleSha256).toBe('a'.repeat(64));
    // Once expired, the view's part says none.
    w.clock.advance(60_000);
    expect(toNodeAttestationView((await w.record(node))?.attestation, w.clock.now())).toEqual({ level: 'none' });
  });

  it('keeps the level across a re-registration of the same agent version, not of another one', async () => {
    const w = world();
    const node = await w.newNode();
    await w.attest(node);
    expect((await node.register()).status).toBe(200);
    expect((await w.record(node))?.attestation?.level).toBe('measured');
    const upgraded = await node.call('POST', '/v1/nodes', {
      publicKey: node.key.publicKey,
      agentVersion: '0.2.0',
      inventory: cpuInventory(),
    });
    expect(upgraded.status).toBe(200);
    expect((await w.record(node))?.attestation).toBeUndefined();
  });

  it('uses a nonce once, only for the node it was issued to, and only before it expires', async () => {
    const w = world();
    const a = await w.newNode();
    const b = await w.newNode();
    const { nonce } = await w.challenge(a);
    // Another node cannot answer A's challenge, and trying does not use it up.
    const stolen = await w.answer(b, { nonce, evidence: [measurement] });
    expect(stolen.status).toBe(400);
    expect(await w.errorCode(stolen)).toBe('challenge_unknown');
    expect((await w.answer(a, { nonce, evidence: [measurement] })).status).toBe(200);
    const replay = await w.answer(a, { nonce, evidence: [measurement] });
    expect(await w.errorCode(replay)).toBe('challenge_unknown');

    const late = await w.challenge(a);
    w.clock.advance(10_001);
    const expired = await w.answer(a, { nonce: late.nonce, evidence: [measurement] });
    expect(expired.status).toBe(400);
    expect(['challenge_expired', 'challenge_unknown']).toContain(await w.errorCode(expired));
  });

  it('refuses an answer without the measurement, of another agent version, or unsigned; the record stays unchanged', async () => {
    const w = world();
    const node = await w.newNode();
    const before = await w.record(node);
    const token = { type: 'nvidia-gpu-token', token: 'a.b.c' };
    const noMeasurement = await w.answer(node, { nonce: (await w.challenge(node)).nonce, evidence: [token] });
    expect(noMeasurement.status).toBe(400);
    expect(await w.errorCode(noMeasurement)).toBe('measurement_required');
    const otherVersion = await w.answer(node, {
      nonce: (await w.challenge(node)).nonce,
      evidence: [{ ...measurement, agentVersion: '9.9.9' }],
    });
    expect(await w.errorCode(otherVersion)).toBe('measurement_version_mismatch');
    const duplicate = await w.answer(node, {
      nonce: (await w.challenge(node)).nonce,
      evidence: [measurement, measurement],
    });
    expect(duplicate.status).toBe(400);
    const unsigned = await w.request(`/v1/nodes/${node.id}/attestation`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ nonce: 'a'.repeat(64), evidence: [measurement] }),
    });
    expect(unsigned.status).toBe(401);
    expect(await w.record(node)).toEqual(before);
  });

  it('verifies a GPU token: a bad one refuses the answer, a good one without a TPM quote proves only measured', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const jwk = { ...(publicKey.export({ format: 'jwk' }) as Record<string, string>), kid: 'k1', kty: 'EC' };
    const clock = new ManualClock();
    const h = inProcessControlPlane({
      clock,
      settings: {
        attestation: {
          ...defaultAttestationSettings,
          nvidia: { ...defaultAttestationSettings.nvidia, jwks: { keys: [jwk] } },
        },
      },
    });
    const node = new TestNode(h.request, clock);
    expect((await node.register()).status).toBe(201);
    const tokenFor = (nonce: string) => {
      const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
      const input = `${b64({ alg: 'ES384', kid: 'k1' })}.${b64({ eat_nonce: nonce, exp: clock.now() / 1000 + 60, 'x-nvidia-overall-att-result': true })}`;
      return `${input}.${sign('sha384', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
    };
    const challenge = async () =>
      (
        (await (
          await node.call('POST', `/v1/nodes/${node.id}/attestation/challenge`, {})
        ).json()) as AttestationChallenge
      ).nonce;
    const first = await challenge();
    const wrong = await node.call('POST', `/v1/nodes/${node.id}/attestation`, {
      nonce: first,
      evidence: [measurement, { type: 'nvidia-gpu-token', token: tokenFor('ab'.repeat(32)) }],
    });
    expect(wrong.status).toBe(400);
    expect(((await wrong.json()) as { error: { code: string } }).error.code).toBe('token_nonce_mismatch');
    const second = await challenge();
    const ok = await node.call('POST', `/v1/nodes/${node.id}/attestation`, {
      nonce: second,
      evidence: [measurement, { type: 'nvidia-gpu-token', token: tokenFor(second) }],
    });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toMatchObject({ level: 'measured', evidence: ['agent-measurement', 'nvidia-gpu-token'] });
  });
});

describe('jobs that require an attestation level', () => {
  it('a node below the level polling gets nothing and the task stays queued; an attested node gets it', async () => {
    const w = world();
    const plain = await w.newNode();
    const attested = await w.newNode();
    await w.attest(attested);
    const job = await w.submit({ command: ['true'], minAttestation: 'measured' });
    expect((await plain.poll(0)).status).toBe(204);
    expect(await w.taskState(job)).toBe('queued');
    // A claim by name is refused too.
    const claim = await plain.call('POST', `/v1/nodes/${plain.id}/claims`, { taskId: `${job}.0` });
    expect(claim.status).toBe(409);
    expect(await w.taskState(job)).toBe('queued');
    const work = await attested.poll(0);
    expect(work.status).toBe(200);
    expect(((await work.json()) as { assignment: { jobId: string } }).assignment.jobId).toBe(job);
  });

  it('an expired attestation counts as none; a higher level than the node has is never met', async () => {
    const w = world();
    const node = await w.newNode();
    await w.attest(node);
    const tpmJob = await w.submit({ command: ['true'], minAttestation: 'tpm' });
    expect((await node.poll(0)).status).toBe(204);
    expect(await w.taskState(tpmJob)).toBe('queued');
    w.clock.advance(60_000);
    // The poll keeps the node live (so the next job is routed to its pool); it gets nothing.
    expect((await node.poll(0)).status).toBe(204);
    const measuredJob = await w.submit({ command: ['true'], minAttestation: 'measured' });
    expect((await node.poll(0)).status).toBe(204);
    expect(await w.taskState(measuredJob)).toBe('queued');
    // Attesting again (as the agent does before expiry) makes it eligible again.
    await w.attest(node);
    expect((await node.poll(0)).status).toBe(200);
    expect(await w.taskState(measuredJob)).not.toBe('queued');
  });

  it('refuses an unknown level at submit', async () => {
    const w = world();
    const res = await w.api('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'], minAttestation: 'platinum' }),
    });
    expect(res.status).toBe(400);
  });
});
