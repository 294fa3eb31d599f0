import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeInventory } from '../protocol/index.js';
import { runCli } from './cli.js';
import { FakeControlPlane } from './test-support/fake-control-plane.js';
import { testAssignment } from './test-support/fixtures.js';
import { waitForExit } from './test-support/processes.js';

const agentBin = join(import.meta.dirname, '../bin/gpuai-agent.js');

async function cli(...args: string[]) {
  let stdout = '';
  let stderr = '';
  const nvidiaCsv = 'index, name, uuid, memory.total [MiB]\n0, NVIDIA L40S, GPU-1, 46068 MiB\n';
  const code = await runCli(['node', 'gpuai-agent', ...args], {
    stdout: (text) => {
      stdout += text;
    },
    stderr: (text) => {
      stderr += text;
    },
    run: async (file) => (file === 'nvidia-smi' ? { kind: 'ok', stdout: nvidiaCsv } : { kind: 'not-found' }),
  });
  return { code, stdout, stderr };
}

describe('gpuai-agent (in process)', () => {
  it('documents the run options', async () => {
    const { code, stdout } = await cli('run', '--help');
    expect(code).toBe(0);
    for (const option of [
      '--api',
      '--runtime',
      '--data-dir',
      '--slots',
      '--poll-wait',
      '--grace-seconds',
      '--json-logs',
    ]) {
      expect(stdout).toContain(option);
    }
    expect(stdout).toContain('GPUAI_AGENT_DATA_DIR');
  });

  it('exits 2 with the option name for an unsupported runtime or an unknown option', async () => {
    const runtime = await cli('run', '--api', 'http://127.0.0.1:1', '--runtime', 'docker', '--data-dir', '/tmp/x');
    expect(runtime).toMatchObject({ code: 2, stderr: expect.stringContaining("--runtime: 'docker' is not available") });
    expect((await cli('run', '--frobnicate')).code).toBe(2);
  });

  it('prints the probed inventory', async () => {
    const json = await cli('probe', '--json', '--region', 'eu-west');
    expect(json.code).toBe(0);
    const inventory = NodeInventory.parse(JSON.parse(json.stdout));
    expect(inventory).toMatchObject({ region: 'eu-west', runtimes: ['process'], gpus: [{ model: 'NVIDIA L40S' }] });
    const text = await cli('probe');
    expect(text.stdout).toContain('gpu 0    nvidia NVIDIA L40S (46068 MiB, GPU-1)');
  });
});

describe('gpuai-agent (as a process)', () => {
  let fake: FakeControlPlane;
  let dataDir: string;
  let agent: ChildProcess | undefined;

  beforeEach(async () => {
    fake = await FakeControlPlane.start();
    dataDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-cli-'));
  });

  afterEach(async () => {
    agent?.kill('SIGKILL');
    await fake.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  function startAgent(...args: string[]) {
    const child = spawn(
      process.execPath,
      [agentBin, 'run', '--runtime', 'process', '--poll-wait', '1', '--json-logs', ...args],
      {
        env: { ...process.env, GPUAI_API: fake.url, GPUAI_AGENT_DATA_DIR: dataDir },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    agent = child;
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    return { child, exited, logs: () => stderr };
  }

  it('on SIGTERM releases the running task and exits 0', async () => {
    const assignment = testAssignment(['sleep', '100']);
    fake.enqueue(assignment);
    const { child, exited, logs } = startAgent('--grace-seconds', '0');
    await fake.waitFor(() => fake.progress.has(assignment.taskId), 10_000);
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(fake.failures.get(assignment.taskId)).toMatchObject({ reason: 'released' });
    const messages = logs()
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages.some((message) => /^registered as node_[a-z2-7]{26}$/.test(message))).toBe(true);
    expect(messages).toContain(`task ${assignment.taskId} attempt 1 started`);
    expect(messages).toContain('stopped');
  });

  it('on a second SIGINT kills the task and exits at once', async () => {
    const assignment = testAssignment(['sh', '-c', 'trap "" TERM; echo $$; sleep 100']);
    fake.enqueue(assignment);
    const { child, exited, logs } = startAgent('--grace-seconds', '60');
    const pid = await fake.waitFor(() => {
      const tail = fake.progress.get(assignment.taskId)?.find((report) => report.logTail)?.logTail;
      return tail === undefined ? undefined : Number(tail.trim());
    }, 10_000);
    child.kill('SIGINT');
    // Signals do not queue: the second must arrive after the first was handled.
    await fake.waitFor(() => logs().includes('shutting down'));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(await waitForExit(pid)).toBe(true);
  });
});
