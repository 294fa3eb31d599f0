import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OpenedAssignment, resultHash, sha256Hex } from '../../protocol/index.js';
import { testOpenedAssignment } from '../test-support/fixtures.js';
import { waitForExit } from '../test-support/processes.js';
import { type ProcessTask, startProcessTask, type TaskOutcome } from './process-runner.js';

let dataDir: string;
let workRoot: string;
const started: ProcessTask[] = [];

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-runner-'));
  workRoot = await mkdtemp(join(tmpdir(), 'gpuai-agent-work-'));
});

afterEach(async () => {
  for (const task of started.splice(0)) task.abort();
  await rm(dataDir, { recursive: true, force: true });
  await rm(workRoot, { recursive: true, force: true });
});

async function start(command: string[], overrides: Partial<OpenedAssignment> = {}, killGraceMs = 5_000) {
  const task = await startProcessTask(testOpenedAssignment(command, overrides), {
    dataDir,
    workRoot,
    killGraceMs,
    baseEnv: {
      PATH: process.env.PATH,
      HOME: '/home/agent',
      LANG: 'C.UTF-8',
      AGENT_SECRET: 'do not leak',
      GPUAI_API_KEY: 'gpk_agent_secret',
      GPUAI_JOIN_TOKEN: 'join-secret',
      AWS_SECRET_ACCESS_KEY: 'aws-secret',
    },
  });
  started.push(task);
  return task;
}

async function run(command: string[], overrides: Partial<OpenedAssignment> = {}) {
  return (await start(command, overrides)).outcome;
}

function exited(outcome: TaskOutcome): Extract<TaskOutcome, { kind: 'exited' }> {
  if (outcome.kind !== 'exited') throw new Error(`expected an exit, got ${JSON.stringify(outcome)}`);
  return outcome;
}

const stdoutEntry = (text: string) => ({ name: 'stdout', sha256: sha256Hex(text), bytes: Buffer.byteLength(text) });

describe('startProcessTask', () => {
  it('hashes stdout into the result hash', async () => {
    const outcome = exited(await run(['printf', 'hello']));
    expect(outcome.exitCode).toBe(0);
    expect(outcome.outputs).toEqual([{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }]);
    expect(outcome.resultHash).toBe(resultHash([{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }]));
    expect(outcome.metrics.wallMs).toBeGreaterThanOrEqual(0);
    expect(outcome.logTail).toBe('hello');
  });

  it('gives the task a minimal environment with its identity, output dir and GPUs', async () => {
    const assignment = {
      attempt: 2,
      index: 3,
      taskCount: 4,
      gpuIndices: [0, 2],
      env: { MODEL: 'llama', GPUAI_TASK_ID: 'spoofed' },
    };
    const outcome = exited(await run(['env'], assignment));
    const env = Object.fromEntries(
      outcome.logTail
        .trim()
        .split('\n')
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    const task = testOpenedAssignment([], assignment);
    const workDir = join(workRoot, `${task.taskId}-2`);
    // Nothing of the agent's environment but PATH and LANG: no API key, join token or cloud credentials.
    expect(env).toEqual({
      PATH: process.env.PATH,
      HOME: workDir,
      TMPDIR: join(workDir, 'tmp'),
      LANG: 'C.UTF-8',
      MODEL: 'llama',
      GPUAI_JOB_ID: task.jobId,
      GPUAI_TASK_ID: task.taskId,
      GPUAI_TASK_INDEX: '3',
      GPUAI_TASK_COUNT: '4',
      GPUAI_ATTEMPT: '2',
      GPUAI_OUTPUT_DIR: join(workDir, 'out'),
      CUDA_VISIBLE_DEVICES: '0,2',
      ROCR_VISIBLE_DEVICES: '0,2',
    });
  });

  it('hides every GPU when none is assigned', async () => {
    // printenv prints an empty line for a variable set to '' and nothing for an unset one.
    const outcome = exited(await run(['sh', '-c', 'printenv CUDA_VISIBLE_DEVICES ROCR_VISIBLE_DEVICES; pwd']));
    const task = testOpenedAssignment([]);
    expect(outcome.logTail).toBe(`\n\n${join(workRoot, `${task.taskId}-1`)}\n`);
  });

  it('runs in a private work dir outside the data dir by default, from which no relative path reaches it', async () => {
    const task = await startProcessTask(testOpenedAssignment(['sh', '-c', 'pwd; ls -a ..; stat -c %a .']), {
      dataDir,
      baseEnv: { PATH: process.env.PATH },
    });
    started.push(task);
    const outcome = exited(await task.outcome);
    await task.dispose();
    const [cwd, ...rest] = outcome.logTail.trim().split('\n');
    expect(cwd).toBe(task.workDir);
    expect(task.workDir.startsWith(dataDir)).toBe(false);
    expect(dataDir.startsWith(join(task.workDir, '..'))).toBe(false);
    expect(rest.at(-1)).toBe('700');
  });

  it('hashes every regular file under the output dir, recursively, but no symbolic link', async () => {
    const script = [
      'mkdir -p "$GPUAI_OUTPUT_DIR/sub/deeper"',
      'printf a > "$GPUAI_OUTPUT_DIR/a.txt"',
      'printf bc > "$GPUAI_OUTPUT_DIR/sub/deeper/b.bin"',
      'ln -s /etc/hostname "$GPUAI_OUTPUT_DIR/link"',
      'printf done',
    ].join(' && ');
    const outcome = exited(await run(['sh', '-c', script]));
    const expected = [
      { name: 'a.txt', sha256: sha256Hex('a'), bytes: 1 },
      stdoutEntry('done'),
      { name: 'sub/deeper/b.bin', sha256: sha256Hex('bc'), bytes: 2 },
    ];
    expect(outcome.outputs).toEqual(expected);
    expect(outcome.resultHash).toBe(resultHash(expected));
  });

  it('passes exit codes through, and maps a death by signal to 128 + signal', async () => {
    expect(exited(await run(['sh', '-c', 'exit 3'])).exitCode).toBe(3);
    expect(exited(await run(['sh', '-c', 'kill -KILL $$'])).exitCode).toBe(137);
  });

  it('parses progress lines, which still count as stdout', async () => {
    const text = '::progress 10 loading\n::progress 55.5 half way\nnot progress\n::progress 101 ignored\n';
    const task = await start(['printf', text]);
    const outcome = exited(await task.outcome);
    expect(task.progress()).toMatchObject({ percent: 55.5, message: 'half way', logTail: text });
    expect(outcome.outputs).toEqual([stdoutEntry(text)]);
  });

  it('keeps the last 4 KiB of stdout and stderr', async () => {
    const outcome = exited(await run(['sh', '-c', 'head -c 10000 /dev/zero | tr "\\0" x; printf END >&2']));
    expect(outcome.logTail).toHaveLength(4096);
    expect(outcome.logTail.endsWith('xEND')).toBe(true);
  });

  it('kills the task and its children on timeout', async () => {
    const startedAt = Date.now();
    const task = await start(['sh', '-c', 'sleep 100 & echo $!; wait'], { timeoutSeconds: 1 });
    const outcome = await task.outcome;
    expect(outcome.kind).toBe('timeout');
    expect(Date.now() - startedAt).toBeLessThan(4_000);
    const childPid = Number(task.progress().logTail.trim());
    expect(await waitForExit(childPid)).toBe(true);
  });

  it('escalates to SIGKILL when the task ignores SIGTERM', async () => {
    const task = await start(['sh', '-c', 'trap "" TERM; sleep 100'], { timeoutSeconds: 1 }, 200);
    const startedAt = Date.now();
    expect((await task.outcome).kind).toBe('timeout');
    expect(Date.now() - startedAt).toBeLessThan(3_000);
  });

  it('kills what the main process left running when it exits', async () => {
    const startedAt = Date.now();
    const outcome = exited(await run(['sh', '-c', 'sleep 100 & echo $!']));
    expect(Date.now() - startedAt).toBeLessThan(3_000);
    expect(await waitForExit(Number(outcome.logTail.trim()))).toBe(true);
  });

  it('stops on abort()', async () => {
    const task = await start(['sleep', '100']);
    setTimeout(() => task.abort(), 50);
    expect((await task.outcome).kind).toBe('aborted');
  });

  it('reports a program that cannot start', async () => {
    const outcome = await run(['/nonexistent/program', '--flag']);
    expect(outcome).toEqual({
      kind: 'error',
      message: expect.stringContaining('could not start /nonexistent/program'),
    });
  });

  it('starts from a fresh work dir and removes it on dispose()', async () => {
    const first = await start(['sh', '-c', 'printf x > "$GPUAI_OUTPUT_DIR/left-behind"']);
    await first.outcome;
    const second = await start(['true']);
    expect(exited(await second.outcome).outputs.map((output) => output.name)).toEqual(['stdout']);
    expect(second.workDir).toBe(first.workDir);
    await second.dispose();
    expect(existsSync(second.workDir)).toBe(false);
  });
});
