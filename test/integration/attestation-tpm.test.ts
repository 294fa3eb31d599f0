import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { measureAgent } from '../../edge-agent/attest/measure.js';
import { TpmQuoter } from '../../edge-agent/attest/tpm.js';
import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import { nodeKey } from '../../functions/domain/resource/node-record.js';
import { defaultAttestationSettings } from '../../functions/domain/security/attestation/settings.js';
import type { AttestationChallenge, AttestationEvidence, TpmQuoteEvidence } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';
import { ensureTpmTools, type Swtpm, startSwtpm } from '../tpm/swtpm.js';

/**
 * The TPM level end to end against a real software TPM: the agent's TpmQuoter drives tpm2-tools
 * against swtpm, the control plane's verifier checks the quote with node:crypto alone.
 */
describe('TPM 2.0 quote attestation against swtpm', () => {
  let tpm: Swtpm;
  let foreignTpm: Swtpm;
  let dataDir: string;
  let foreignDir: string;

  beforeAll(async () => {
    ensureTpmTools();
    [tpm, foreignTpm] = await Promise.all([startSwtpm(), startSwtpm()]);
    dataDir = await mkdtemp(join(tmpdir(), 'gpuai-attest-'));
    foreignDir = await mkdtemp(join(tmpdir(), 'gpuai-attest-foreign-'));
  }, 600_000);

  afterAll(async () => {
    await Promise.all([tpm?.stop(), foreignTpm?.stop()]);
    await Promise.all([dataDir, foreignDir].map((d) => d && rm(d, { recursive: true, force: true })));
  });

  function world() {
    const h = inProcessControlPlane({
      settings: { attestation: { ...defaultAttestationSettings, tpm: { requiredPcrs: [0, 7] } } },
    });
    const node = new TestNode(h.request);
    const challenge = async (): Promise<AttestationChallenge> => {
      const res = await node.call('POST', `/v1/nodes/${node.id}/attestation/challenge`, {});
      expect(res.status).toBe(201);
      return (await res.json()) as AttestationChallenge;
    };
    const answer = (nonce: string, evidence: AttestationEvidence[]) =>
      node.call('POST', `/v1/nodes/${node.id}/attestation`, { nonce, evidence });
    const record = async () => (await h.store.get<NodeRecord>(nodeKey(node.id)))?.data;
    return { ...h, node, challenge, answer, record };
  }

  const measurement = () => measureAgent({ test: true }).then((m) => ({ ...m, agentVersion: '0.1.0' }));

  it('accepts a quote the agent made with the nonce, pins the AK, and shows level tpm', async () => {
    const w = world();
    expect((await w.node.register()).status).toBe(201);
    const quoter = new TpmQuoter({ tcti: tpm.tcti, dataDir });
    const { nonce } = await w.challenge();
    const res = await w.answer(nonce, [await measurement(), await quoter.quote(nonce)]);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ level: 'tpm', evidence: ['agent-measurement', 'tpm-quote'] });
    const stored = await w.record();
    expect(stored?.attestation?.level).toBe('tpm');
    expect(stored?.attestationKey?.spki).toMatch(/^MII/);
    const view = (await (await w.request(`/v1/nodes/${w.node.id}`)).json()) as { attestation?: { level: string } };
    // The node view is an application route (API key); when it answers, it shows the level.
    if (view.attestation !== undefined) expect(view.attestation.level).toBe('tpm');

    // An agent restart makes a new quoter over the same data dir: the persistent AK is reused,
    // so the pinned key still matches.
    const restarted = new TpmQuoter({ tcti: tpm.tcti, dataDir });
    expect(await restarted.attestationKey()).toBe(await quoter.attestationKey());
    const again = await w.challenge();
    expect((await w.answer(again.nonce, [await measurement(), await restarted.quote(again.nonce)])).status).toBe(200);
    await w.close();
  });

  it('refuses a quote over another nonce, a changed PCR value, and a foreign AK; the node record stays as it was', async () => {
    const w = world();
    expect((await w.node.register()).status).toBe(201);
    const quoter = new TpmQuoter({ tcti: tpm.tcti, dataDir });
    const first = await w.challenge();
    expect((await w.answer(first.nonce, [await measurement(), await quoter.quote(first.nonce)])).status).toBe(200);
    const before = await w.record();

    const refused = async (evidence: (nonce: string) => Promise<TpmQuoteEvidence>, status: number, code: string) => {
      const { nonce } = await w.challenge();
      const res = await w.answer(nonce, [await measurement(), await evidence(nonce)]);
      expect(res.status).toBe(status);
      expect(((await res.json()) as { error: { code: string } }).error.code).toBe(code);
      expect(await w.record()).toEqual(before);
      // The challenge was used up by the refused answer.
      const replay = await w.answer(nonce, [await measurement()]);
      expect(((await replay.json()) as { error: { code: string } }).error.code).toBe('challenge_unknown');
    };

    // Wrong nonce: the TPM quoted another value as qualifying data.
    await refused(() => quoter.quote('ab'.repeat(32)), 400, 'tpm_nonce_mismatch');
    // Wrong PCR value: the values sent are not the ones the TPM quoted.
    await refused(
      async (nonce) => {
        const quote = await quoter.quote(nonce);
        const [pcr0, ...rest] = quote.pcrs;
        return { ...quote, pcrs: [{ index: pcr0?.index ?? 0, value: 'ff'.repeat(32) }, ...rest] };
      },
      400,
      'tpm_pcr_digest_mismatch',
    );
    // A foreign AK (another TPM) signing a good quote: not the key pinned to this node.
    const foreign = new TpmQuoter({ tcti: foreignTpm.tcti, dataDir: foreignDir });
    await refused((nonce) => foreign.quote(nonce), 409, 'ak_mismatch');
    // The foreign TPM's quote presented under this node's pinned AK: the signature does not verify.
    await refused(
      async (nonce) => ({ ...(await foreign.quote(nonce)), akPublicKey: await quoter.attestationKey() }),
      400,
      'tpm_bad_signature',
    );
    await w.close();
  });

  it('refuses a PCR that differs from its reference value once it was extended', async () => {
    const h = inProcessControlPlane({
      settings: {
        attestation: {
          ...defaultAttestationSettings,
          tpm: { requiredPcrs: [0, 7], expectedPcrs: { '7': '00'.repeat(32) } },
        },
      },
    });
    const node = new TestNode(h.request);
    expect((await node.register()).status).toBe(201);
    const quoter = new TpmQuoter({ tcti: foreignTpm.tcti, dataDir: foreignDir });
    const attest = async () => {
      const challenge = (await (
        await node.call('POST', `/v1/nodes/${node.id}/attestation/challenge`, {})
      ).json()) as AttestationChallenge;
      return node.call('POST', `/v1/nodes/${node.id}/attestation`, {
        nonce: challenge.nonce,
        evidence: [await measurement(), await quoter.quote(challenge.nonce)],
      });
    };
    expect((await attest()).status).toBe(200);
    const { execFileSync } = await import('node:child_process');
    execFileSync('tpm2_pcrextend', [`7:sha256=${'11'.repeat(32)}`], {
      env: { ...process.env, TPM2TOOLS_TCTI: foreignTpm.tcti },
    });
    const res = await attest();
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('tpm_pcr_unexpected');
    await h.close();
  });
});
