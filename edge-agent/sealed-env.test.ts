import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Assignment,
  generateSealingKeyPair,
  openResultText,
  sealDataKeyToNode,
  sealEnvelope,
  sealingSuite,
  sha256Hex,
} from '../protocol/index.js';
import { identityFiles } from './identity.js';
import { AgentHarness } from './test-support/agent-harness.js';
import { testAssignment, testJobId } from './test-support/fixtures.js';

/**
 * The agent end to end against the fake control plane: it registers its sealing key, opens a
 * job's env sealed to it in memory, runs the job with it, seals the log tail to the job's result
 * key, and refuses an env that does not open. The env is never written to disk nor logged.
 */
let harness: AgentHarness;
const secret = `s3cret-${randomBytes(8).toString('hex')}`;

beforeEach(async () => {
  harness = await AgentHarness.start('gpuai-agent-sealed-');
});
afterEach(async () => {
  await harness.stop();
});

/** Starts an agent and returns its node id and registered sealing key. */
async function registeredAgent(): Promise<{ nodeId: string; sealingKey: string }> {
  const started = harness.startAgent();
  const registration = await harness.fake.waitFor(() => harness.fake.registrations[0]);
  const nodeId = started.agent.nodeId;
  if (registration.sealingKey === undefined || nodeId === undefined) throw new Error('no sealing key registered');
  return { nodeId, sealingKey: registration.sealingKey };
}

/** What the control plane does at dispatch: the env in its envelope, the data key sealed to the node. */
async function sealedAssignment(
  command: string[],
  env: Record<string, string>,
  to: { nodeId: string; sealingKey: string },
  extra: Partial<Assignment> = {},
  jobSuffix = 'S',
): Promise<Assignment> {
  const base = testAssignment(command, { jobId: testJobId(jobSuffix) });
  const dataKey = randomBytes(32);
  const envelope = sealEnvelope(dataKey, Buffer.from(JSON.stringify(env)), base.jobId);
  const { enc, key } = await sealDataKeyToNode(dataKey, to.sealingKey, {
    jobId: base.jobId,
    taskId: base.taskId,
    attempt: base.attempt,
    nodeId: to.nodeId,
  });
  return { ...base, sealedEnv: { suite: sealingSuite, enc, key, envelope }, ...extra };
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

describe('agent: jobs sealed to the node', () => {
  it('registers its X25519 sealing key, kept in the data dir', async () => {
    const { sealingKey } = await registeredAgent();
    expect(sealingKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const summary = JSON.parse(await readFile(join(harness.dataDir, identityFiles.summary), 'utf8'));
    expect(summary.sealingKey).toBe(sealingKey);
  });

  it('opens the sealed env in memory, runs the job with it, and seals the log tail to the result key', async () => {
    const node = await registeredAgent();
    const resultKey = generateSealingKeyPair();
    const assignment = await sealedAssignment(
      ['sh', '-c', 'printf "%s\\n" "$TOKEN"; echo "::progress 50 token is $TOKEN"; sleep 0.3'],
      { TOKEN: secret },
      node,
      { resultKey: resultKey.publicKey },
    );
    harness.fake.enqueue(assignment);
    const result = await harness.fake.waitFor(() => harness.fake.results.get(assignment.taskId));
    // The process saw the variable: its stdout is the secret.
    expect(result.exitCode).toBe(0);
    const stdout = `${secret}\n::progress 50 token is ${secret}\n`;
    expect(result.outputs).toEqual([{ name: 'stdout', sha256: sha256Hex(stdout), bytes: stdout.length }]);
    // The control plane got only ciphertext; the result key opens it.
    expect(result.logTail).toMatch(/^hpke1\./);
    const ctx = { jobId: assignment.jobId, taskId: assignment.taskId };
    expect(await openResultText(resultKey.privateKey, result.logTail ?? '', { ...ctx, field: 'logTail' })).toContain(
      secret,
    );
    const reports = harness.fake.progress.get(assignment.taskId) ?? [];
    expect(reports.some((report) => report.message !== undefined)).toBe(true);
    for (const report of reports) {
      if (report.logTail !== undefined) expect(report.logTail).toMatch(/^hpke1\./);
      if (report.message !== undefined) {
        expect(await openResultText(resultKey.privateKey, report.message, { ...ctx, field: 'message' })).toContain(
          secret,
        );
      }
    }
    // Never in the clear on the wire, in the agent's log, or on disk.
    expect(JSON.stringify(harness.fake.received)).not.toContain(secret);
    expect(harness.logLines.join('\n')).not.toContain(secret);
    for (const file of await filesUnder(harness.dataDir)) {
      expect(await readFile(file, 'utf8')).not.toContain(secret);
    }
  });

  it('runs a job whose env is sealed to it without a result key: the log shows it ran', async () => {
    const node = await registeredAgent();
    const assignment = await sealedAssignment(['sh', '-c', 'printf "mode=%s" "$MODE"'], { MODE: 'fast' }, node);
    harness.fake.enqueue(assignment);
    const result = await harness.fake.waitFor(() => harness.fake.results.get(assignment.taskId));
    expect(result.logTail).toBe('mode=fast');
  });

  it('refuses an env sealed to another key, to another node id, or with a flipped byte, and runs nothing', async () => {
    const node = await registeredAgent();
    const other = generateSealingKeyPair();
    const command = ['sh', '-c', 'printf ran'];
    const good = await sealedAssignment(command, { TOKEN: secret }, node, {}, '2');
    const flipped = Buffer.from(good.sealedEnv?.enc ?? '', 'base64url');
    flipped[0] = (flipped[0] ?? 0) ^ 0x01;
    const sealed = good.sealedEnv as NonNullable<Assignment['sealedEnv']>;
    const moved = await sealedAssignment(command, { TOKEN: secret }, node, {}, '3');
    const cases: Assignment[] = [
      await sealedAssignment(command, { TOKEN: secret }, { ...node, sealingKey: other.publicKey }, {}, '0'),
      await sealedAssignment(command, { TOKEN: secret }, { ...node, nodeId: 'node_someone_else' }, {}, '1'),
      { ...good, sealedEnv: { ...sealed, enc: flipped.toString('base64url') } },
      // Sealed for attempt 1, delivered as attempt 2.
      { ...moved, attempt: 2 },
    ];
    for (const assignment of cases) harness.fake.enqueue(assignment);
    for (const assignment of cases) {
      const failure = await harness.fake.waitFor(() => harness.fake.failures.get(assignment.taskId));
      expect(failure).toMatchObject({ attempt: assignment.attempt, reason: 'error' });
      expect(failure.message).toMatch(/^sealed_env_refused: /);
      expect(harness.fake.results.get(assignment.taskId)).toBeUndefined();
      expect(harness.fake.progress.get(assignment.taskId)).toBeUndefined();
    }
    expect(harness.logLines.join('\n')).not.toContain(secret);
  });
});
