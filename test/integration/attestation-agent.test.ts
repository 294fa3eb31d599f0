import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../edge-agent/agent.js';
import { Attester } from '../../edge-agent/attest/attester.js';
import { ControlPlaneClient } from '../../edge-agent/client.js';
import type { Logger } from '../../edge-agent/log.js';
import { agentVersion } from '../../edge-agent/version.js';
import { defaultAttestationSettings } from '../../functions/domain/security/attestation/settings.js';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane } from '../support/in-process.js';
import { ensureTpmTools, type Swtpm, startSwtpm } from '../tpm/swtpm.js';

/**
 * The agent's attester against the control plane over HTTP: a real swtpm for the quote, a token
 * command standing in for NVIDIA's local verifier (it signs with a fixture key the control plane
 * is configured to trust), and the measurement of this very checkout.
 */
describe('the agent attests: measurement, TPM quote, GPU token', () => {
  let tpm: Swtpm;
  let dir: string;
  let server: ReturnType<typeof serve>;
  let api: string;
  const verifierKey = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const h = inProcessControlPlane({
    settings: {
      attestation: {
        ...defaultAttestationSettings,
        tpm: { requiredPcrs: [0, 7] },
        nvidia: {
          ...defaultAttestationSettings.nvidia,
          jwks: { keys: [{ ...(verifierKey.publicKey.export({ format: 'jwk' }) as { kty: string }), kid: 'local-1' }] },
        },
      },
    },
  });

  beforeAll(async () => {
    ensureTpmTools();
    tpm = await startSwtpm();
    dir = await mkdtemp(join(tmpdir(), 'gpuai-attest-agent-'));
    await writeFile(join(dir, 'verifier.pem'), verifierKey.privateKey.export({ format: 'pem', type: 'pkcs8' }));
    server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    api = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }, 600_000);

  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await tpm?.stop();
    await h.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** A shell command that prints an ES384 token for the nonce in $GPUAI_ATTESTATION_NONCE (or a fixed one). */
  const tokenCommand = (nonce = 'process.env.GPUAI_ATTESTATION_NONCE') =>
    `${process.execPath} -e "${[
      "const c=require('node:crypto'),fs=require('node:fs');",
      "const b=(v)=>Buffer.from(JSON.stringify(v)).toString('base64url');",
      `const i=b({alg:'ES384',kid:'local-1'})+'.'+b({eat_nonce:${nonce},exp:Math.floor(Date.now()/1000)+300,'x-nvidia-overall-att-result':true});`,
      `const s=c.sign('sha384',Buffer.from(i),{key:fs.readFileSync('${join(dir, 'verifier.pem')}'),dsaEncoding:'ieee-p1363'});`,
      "process.stdout.write(JSON.stringify([['JWT',i+'.'+s.toString('base64url')],{}]));",
    ].join('')}"`;

  async function registeredClient() {
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    const client = new ControlPlaneClient({ api, nodeId: nodeIdFromPublicKey(keyPair.publicKey), keyPair });
    await client.register({ publicKey: keyPair.publicKey, agentVersion, inventory: cpuInventory() });
    return client;
  }

  const capture = () => {
    const lines: string[] = [];
    const logger: Logger = {
      info: (m) => lines.push(`info ${m}`),
      warn: (m) => lines.push(`warn ${m}`),
      error: (m) => lines.push(`error ${m}`),
    };
    return { lines, logger };
  };

  it('proves tpm+gpu with all three, and again after a restart with the same data dir', async () => {
    const client = await registeredClient();
    const dataDir = join(dir, 'node-a');
    const options = {
      client,
      dataDir,
      config: { region: 'local' },
      tpm: { tcti: tpm.tcti },
      gpuToken: { kind: 'command' as const, command: tokenCommand() },
    };
    const first = await new Attester({ ...options, logger: capture().logger }).attestOnce(new AbortController().signal);
    expect(first).toMatchObject({ level: 'tpm+gpu', evidence: ['agent-measurement', 'tpm-quote', 'nvidia-gpu-token'] });
    // A restarted agent: a new attester, the AK found at its persistent handle, still the pinned one.
    const again = await new Attester({ ...options, logger: capture().logger }).attestOnce(new AbortController().signal);
    expect(again.level).toBe('tpm+gpu');
    const node = await h.cp.nodes.get(client.nodeId);
    expect(node.attestation?.measurement?.agentVersion).toBe(agentVersion);
  });

  it('a running agent attests after registering, with its TPM, and again after a restart', async () => {
    const dataDir = join(dir, 'agent-run');
    const start = () => {
      const agent = new Agent({
        api,
        dataDir,
        region: 'local',
        slots: 1,
        pollWaitSeconds: 1,
        graceSeconds: 0,
        probe: async () => ({ inventory: cpuInventory(), warnings: [] }),
        attestation: { tpm: { tcti: tpm.tcti } },
      });
      return { agent, running: agent.run() };
    };
    const level = async (nodeId: string | undefined) =>
      nodeId === undefined ? undefined : (await h.cp.nodes.find(nodeId))?.attestation;
    const until = async (check: () => Promise<boolean>) => {
      for (let i = 0; i < 200 && !(await check()); i++) await new Promise((r) => setTimeout(r, 50));
    };
    const first = start();
    await until(async () => (await level(first.agent.nodeId))?.level === 'tpm');
    const verifiedAt = (await level(first.agent.nodeId))?.verifiedAt;
    expect((await level(first.agent.nodeId))?.level).toBe('tpm');
    await first.agent.shutdown();
    await first.running;
    const second = start();
    await until(async () => ((await level(second.agent.nodeId))?.verifiedAt ?? 0) > (verifiedAt ?? 0));
    expect(second.agent.nodeId).toBe(first.agent.nodeId);
    expect((await level(second.agent.nodeId))?.level).toBe('tpm');
    await second.agent.shutdown();
    await second.running;
  });

  it('falls back to the measurement when its GPU token is refused, and says why', async () => {
    const client = await registeredClient();
    const { lines, logger } = capture();
    const attester = new Attester({
      client,
      dataDir: join(dir, 'node-b'),
      config: {},
      logger,
      gpuToken: { kind: 'command', command: tokenCommand(`'${'ab'.repeat(32)}'`) },
    });
    const result = await attester.attestOnce(new AbortController().signal);
    expect(result.level).toBe('measured');
    expect(lines.some((l) => l.startsWith('warn') && l.includes('token_nonce_mismatch'))).toBe(true);
  });

  it('falls back to the measurement when the TPM cannot be reached', async () => {
    const client = await registeredClient();
    const { lines, logger } = capture();
    const attester = new Attester({
      client,
      dataDir: join(dir, 'node-c'),
      config: {},
      logger,
      tpm: { tcti: 'swtpm:host=127.0.0.1,port=1' },
    });
    expect((await attester.attestOnce(new AbortController().signal)).level).toBe('measured');
    expect(lines.some((l) => l.startsWith('warn') && l.includes('tpm2_'))).toBe(true);
  });

  it('the loop re-attests before expiry', async () => {
    const client = await registeredClient();
    const stop = new AbortController();
    const seen: string[] = [];
    const attester = new Attester({
      client: {
        attestationChallenge: (o) => client.attestationChallenge(o),
        attest: async (body, o) => {
          const result = await client.attest(body, o);
          seen.push(result.verifiedAt);
          // Pretend the level holds for 1.5 s: the next round is due after 1.2 s (at least 1 s).
          return { ...result, expiresAt: new Date(Date.parse(result.verifiedAt) + 1500).toISOString() };
        },
      },
      dataDir: join(dir, 'node-d'),
      config: {},
      logger: capture().logger,
    });
    const loop = attester.run(stop.signal);
    await new Promise((r) => setTimeout(r, 2800));
    stop.abort();
    await loop;
    expect(seen.length).toBeGreaterThanOrEqual(2);
  });
});
