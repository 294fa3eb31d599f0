import { type ChildProcess, spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeInventory } from '../protocol/index.js';
import { AgentHarness, waitUntil } from '../test/support/agent-harness.js';
import { runCli } from './cli.js';
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

/** A real agent process against the real embedded control plane (test/support/agent-harness.ts). */
describe('gpuai-agent (as a process)', { timeout: 60_000 }, () => {
  let harness: AgentHarness;
  let agent: ChildProcess | undefined;

  beforeEach(async () => {
    harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-cli-' });
  });

  afterEach(async () => {
    agent?.kill('SIGKILL');
    await harness.stop();
  });

  function startAgent(...args: string[]) {
    const child = spawn(
      process.execPath,
      [agentBin, 'run', '--runtime', 'process', '--poll-wait', '1', '--json-logs', ...args],
      {
        env: { ...process.env, GPUAI_API: harness.url, GPUAI_AGENT_DATA_DIR: harness.dataDir },
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
    const job = await harness.submit({ command: ['sleep', '100'] });
    const { child, exited, logs } = startAgent('--grace-seconds', '0');
    await harness.waitForTask(job.id, (t) => t.state === 'running', 'the task running');
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    const task = await harness.task(job.id);
    expect(task).toMatchObject({ state: 'queued', attempts: [{ outcome: 'released' }] });
    const messages = logs()
      .trim()
      .split('\n')
      .map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(messages.some((message) => /^registered as node_[a-z2-7]{26}$/.test(message))).toBe(true);
    expect(messages).toContain(`task ${task.id} attempt 1 started`);
    expect(messages).toContain('stopped');
  });

  it('on a second SIGINT kills the task and exits at once', async () => {
    const job = await harness.submit({ command: ['sh', '-c', 'trap "" TERM; echo $$; sleep 100'] });
    const { child, exited, logs } = startAgent('--grace-seconds', '60');
    const task = await harness.waitForTask(job.id, (t) => /^\d+/.test(t.progress?.logTail ?? ''), 'the pid');
    const pid = Number(task.progress?.logTail?.trim());
    child.kill('SIGINT');
    // Signals do not queue: the second must arrive after the first was handled.
    await waitUntil('the first signal handled', () => logs().includes('shutting down'));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(await waitForExit(pid)).toBe(true);
  });
});
