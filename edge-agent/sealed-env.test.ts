import { randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Assignment,
  generateSealingKeyPair,
  openResultText,
  RegisterNodeRequest,
  sealDataKeyToNode,
  sealEnvelope,
  sealingSuite,
  sha256Hex,
} from '../protocol/index.js';
import { AgentHarness, waitUntil } from '../test/support/agent-harness.js';
import { identityFiles } from './identity.js';

/**
 * The agent end to end against the real embedded control plane (test/support/agent-harness.ts): it
 * registers its sealing key, the server seals each job's env to it at dispatch, the agent opens it
 * in memory, runs the job with it, seals the log tail to the job's result key, and refuses an env
 * that does not open. The env is never written to the agent's disk, its log or its requests.
 */
let harness: AgentHarness;
const secret = `s3cret-${randomBytes(8).toString('hex')}`;

beforeEach(async () => {
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-sealed-' });
});
afterEach(async () => {
  await harness.stop();
});

/** Starts an agent and returns its node id and the sealing key it registered. */
async function registeredAgent(): Promise<{ nodeId: string; sealingKey: string }> {
  const started = harness.startAgent();
  const registration = await waitUntil('a registration', () => harness.sent('POST', '/v1/nodes')[0]);
  const { sealingKey } = RegisterNodeRequest.parse(JSON.parse(registration.body));
  const nodeId = started.agent.nodeId;
  if (sealingKey === undefined || nodeId === undefined) throw new Error('no sealing key registered');
  await waitUntil('the node live', async () => (await harness.api.liveNodes()) === 1);
  return { nodeId, sealingKey };
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

/** The proxy rewrites the next work answer's assignment with `tamper`. */
function tamperNextAssignment(tamper: (assignment: Assignment) => Assignment | Promise<Assignment>): void {
  harness.proxy.rewriteNext(
    1,
    async (body) => {
      const { assignment } = JSON.parse(body) as { assignment: Assignment };
      return JSON.stringify({ assignment: await tamper(assignment) });
    },
    (request) => request.path.includes('/work'),
  );
}

/** A sealed env as the server makes it, but sealed to `sealingKey` under `nodeId`. */
async function sealedFor(
  assignment: Assignment,
  sealingKey: string,
  nodeId: string,
): Promise<NonNullable<Assignment['sealedEnv']>> {
  const dataKey = randomBytes(32);
  const envelope = sealEnvelope(dataKey, Buffer.from(JSON.stringify({ TOKEN: secret })), assignment.jobId);
  const { enc, key } = await sealDataKeyToNode(dataKey, sealingKey, {
    jobId: assignment.jobId,
    taskId: assignment.taskId,
    attempt: assignment.attempt,
    nodeId,
  });
  return { suite: sealingSuite, enc, key, envelope };
}

describe('agent: jobs sealed to the node', { timeout: 60_000 }, () => {
  it('registers its X25519 sealing key, kept in the data dir', async () => {
    const { sealingKey } = await registeredAgent();
    expect(sealingKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const summary = JSON.parse(await readFile(join(harness.dataDir, identityFiles.summary), 'utf8'));
    expect(summary.sealingKey).toBe(sealingKey);
  });

  it('opens the sealed env in memory, runs the job with it, and seals the log tail to the result key', async () => {
    await registeredAgent();
    const resultKey = generateSealingKeyPair();
    const go = join(harness.dataDir, 'go');
    const job = await harness.submit({
      command: [
        'sh',
        '-c',
        `printf "%s\\n" "$TOKEN"; echo "::progress 50 token is $TOKEN"; while [ ! -e '${go}' ]; do sleep 0.05; done`,
      ],
      env: { TOKEN: secret },
      resultKey: resultKey.publicKey,
    });
    const taskId = job.tasks[0]?.id ?? '';
    const ctx = { jobId: job.id, taskId };
    // While it runs, the server holds its progress message sealed: only the result key opens it.
    const running = await harness.waitForTask(job.id, (t) => t.progress?.percent === 50, 'progress 50');
    expect(running.progress?.message).toMatch(/^hpke1\./);
    expect(
      await openResultText(resultKey.privateKey, running.progress?.message ?? '', { ...ctx, field: 'message' }),
    ).toContain(secret);
    await writeFile(go, '');

    const done = await harness.finished(job.id);
    expect(done.status).toBe('succeeded');
    const result = done.tasks[0]?.result;
    // The process saw the variable: its stdout is the secret.
    const stdout = `${secret}\n::progress 50 token is ${secret}\n`;
    expect(result?.outputs).toEqual([{ name: 'stdout', sha256: sha256Hex(stdout), bytes: stdout.length }]);
    expect(result?.logTail).toMatch(/^hpke1\./);
    expect(await openResultText(resultKey.privateKey, result?.logTail ?? '', { ...ctx, field: 'logTail' })).toContain(
      secret,
    );
    // Never in the clear in what the agent sent, in its log, or on its disk.
    expect(harness.proxy.requests.some((r) => r.path.endsWith('/result'))).toBe(true);
    expect(JSON.stringify(harness.proxy.requests)).not.toContain(secret);
    expect(harness.logLines.join('\n')).not.toContain(secret);
    for (const file of await filesUnder(harness.dataDir)) {
      expect(await readFile(file, 'utf8')).not.toContain(secret);
    }
  });

  it('runs a job whose env is sealed to it without a result key: the log shows it ran', async () => {
    await registeredAgent();
    const job = await harness.submit({ command: ['sh', '-c', 'printf "mode=%s" "$MODE"'], env: { MODE: 'fast' } });
    expect((await harness.finished(job.id)).tasks[0]?.result?.logTail).toBe('mode=fast');
  });

  it('refuses an env sealed to another key, to another node id, or with a flipped byte, and runs nothing', async () => {
    const node = await registeredAgent();
    const other = generateSealingKeyPair();
    // The server seals each env to the node that claimed the task, for that attempt; only a
    // tampered answer (here the proxy's) can carry anything else.
    const tampers: [string, (a: Assignment) => Assignment | Promise<Assignment>][] = [
      ['another key', async (a) => ({ ...a, sealedEnv: await sealedFor(a, other.publicKey, node.nodeId) })],
      ['another node id', async (a) => ({ ...a, sealedEnv: await sealedFor(a, node.sealingKey, 'node_someone_else') })],
      [
        'a flipped byte',
        (a) => {
          const sealed = a.sealedEnv as NonNullable<Assignment['sealedEnv']>;
          const flipped = Buffer.from(sealed.enc, 'base64url');
          flipped[0] = (flipped[0] ?? 0) ^ 0x01;
          return { ...a, sealedEnv: { ...sealed, enc: flipped.toString('base64url') } };
        },
      ],
    ];
    for (const [what, tamper] of tampers) {
      tamperNextAssignment(tamper);
      const job = await harness.submit({ command: ['sh', '-c', 'printf ran'], env: { TOKEN: secret }, retries: 0 });
      const [task] = (await harness.finished(job.id)).tasks;
      expect(task, what).toMatchObject({
        state: 'failed',
        attempts: [{ outcome: 'failed', detail: expect.stringMatching(/^error: sealed_env_refused: /) }],
      });
      expect(harness.sent('POST', `/tasks/${task?.id}/progress`), what).toEqual([]);
      expect(harness.sent('POST', `/tasks/${task?.id}/result`), what).toEqual([]);
    }
    expect(harness.logLines.join('\n')).not.toContain(secret);
  });

  it('refuses an env sealed for attempt 1 delivered as attempt 2', async () => {
    await registeredAgent();
    tamperNextAssignment((a) => ({ ...a, attempt: a.attempt + 1 }));
    const job = await harness.submit({ command: ['sh', '-c', 'printf ran'], env: { TOKEN: secret } });
    const taskId = job.tasks[0]?.id ?? '';
    // Waits for the server's answer too: the proxy logs the request when it has read its body.
    const [failure] = await waitUntil('the refusal and its answer', () => {
      const sent = harness.sent('POST', `/tasks/${taskId}/fail`);
      return sent[0]?.status !== undefined ? sent : undefined;
    });
    expect(JSON.parse(failure?.body ?? '{}')).toMatchObject({
      attempt: 2,
      reason: 'error',
      message: expect.stringMatching(/^sealed_env_refused: /),
    });
    expect(harness.sent('POST', `/tasks/${taskId}/progress`)).toEqual([]);
    // The server leased attempt 1: a report for attempt 2 is not its to take.
    expect(failure?.status).toBe(409);
  });
});
