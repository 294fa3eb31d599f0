import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type OpenedAssignment, sha256Hex } from '../../protocol/index.js';
import { testOpenedAssignment } from '../test-support/fixtures.js';
import { type ProcessTask, removeWorkRootIfEmpty, startProcessTask, type TaskOutcome } from './process-runner.js';
import { resolveTaskUser, type TaskUser } from './task-user.js';

/**
 * A task of the process runtime, run by a root agent, runs as an unprivileged user: it cannot
 * read the agent's keys or the control plane's (the reviewer's attack: `readlink /proc/$PPID/cwd`,
 * then `cat` the admin key and master key there). Switching users needs root: these run as root.
 */
const isRoot = process.getuid?.() === 0;

let dataDir: string;
let secretDir: string;
const started: ProcessTask[] = [];
const nobody = resolveTaskUser(undefined, { agentUid: 0 }).user as TaskUser;

beforeEach(async () => {
  dataDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-taskuser-'));
  secretDir = await mkdtemp(join(tmpdir(), 'gpuai-agent-secret-'));
});

afterEach(async () => {
  for (const task of started.splice(0)) {
    task.abort();
    await task.outcome;
    await task.dispose();
  }
  await removeWorkRootIfEmpty(dataDir);
  await rm(dataDir, { recursive: true, force: true });
  await rm(secretDir, { recursive: true, force: true });
});

async function start(command: string[], taskUser: TaskUser = nobody, overrides: Partial<OpenedAssignment> = {}) {
  const task = await startProcessTask(testOpenedAssignment(command, overrides), {
    dataDir,
    taskUser,
    baseEnv: { PATH: process.env.PATH },
  });
  started.push(task);
  return task;
}

function exited(outcome: TaskOutcome): Extract<TaskOutcome, { kind: 'exited' }> {
  if (outcome.kind !== 'exited') throw new Error(`expected an exit, got ${JSON.stringify(outcome)}`);
  return outcome;
}

describe.runIf(isRoot)('startProcessTask with a task user (agent as root)', () => {
  it('runs the task as nobody, with no supplementary group of root', async () => {
    const task = await start(['sh', '-c', 'id -u; id -g; id -G']);
    expect(exited(await task.outcome).logTail).toBe(`${nobody.uid}\n${nobody.gid}\n${nobody.gid}\n`);
  });

  it('runs the task as a chosen uid:gid, even one without a passwd entry', async () => {
    const task = await start(['sh', '-c', 'id -u; id -G; stat -c "%u:%g %a" .'], { uid: 43210, gid: 43211, name: 'x' });
    expect(exited(await task.outcome).logTail).toBe('43210\n43211\n43210:43211 700\n');
  });

  it("cannot read a root-only file, the agent's data dir, or /proc/<agent>/cwd and environ", async () => {
    // The master key: 0600, root's, in a directory anyone may enter. And the node key: in the 0700 data dir.
    await chmod(secretDir, 0o755);
    const masterKey = join(secretDir, 'master.key');
    await writeFile(masterKey, 'MASTER-SECRET', { mode: 0o600 });
    const nodeKey = join(dataDir, 'node.key');
    await writeFile(nodeKey, 'NODE-SECRET', { mode: 0o600 });
    const probes = [
      `cat ${masterKey}`,
      `cat ${nodeKey}`,
      `ls ${dataDir}`,
      `readlink /proc/${process.pid}/cwd`,
      'readlink /proc/$PPID/cwd',
      'cat /proc/$PPID/environ',
    ];
    const script = probes.map((probe) => `if ${probe}; then echo "LEAK: ${probe}"; fi`).join('\n');
    const task = await start(['sh', '-c', `${script}\necho "ppid $PPID"`]);
    const log = exited(await task.outcome).logTail;
    expect(log).toContain(`ppid ${process.pid}`);
    expect(log).not.toContain('LEAK');
    expect(log).not.toContain('SECRET');
    expect(log).not.toContain(process.cwd());
    // Every probe failed (readlink silently): cat, ls and /proc say why.
    expect(log.match(/Permission denied/g)?.length).toBe(4);
  });

  it('writes its outputs, HOME and TMPDIR; the agent hashes them and removes the work dir', async () => {
    const script = [
      'printf a > "$GPUAI_OUTPUT_DIR/a.txt"',
      'mkdir "$GPUAI_OUTPUT_DIR/sub"',
      'printf bc > "$GPUAI_OUTPUT_DIR/sub/b.txt"',
      'printf h > "$HOME/.cache"',
      'mktemp > /dev/null',
      'ls .. || true',
      'printf done',
    ].join(' && ');
    const task = await start(['sh', '-c', script]);
    const outcome = exited(await task.outcome);
    expect(outcome.exitCode).toBe(0);
    expect(outcome.outputs).toEqual([
      { name: 'a.txt', sha256: sha256Hex('a'), bytes: 1 },
      { name: 'stdout', sha256: sha256Hex('done'), bytes: 4 },
      { name: 'sub/b.txt', sha256: sha256Hex('bc'), bytes: 2 },
    ]);
    // It passes through the work root to its own dir, but cannot list the other tasks' dirs.
    expect(outcome.logTail).toContain('Permission denied');
    const workRoot = dirname(task.workDir);
    expect((await stat(workRoot)).mode & 0o777).toBe(0o711);
    expect((await stat(dirname(workRoot))).mode & 0o777).toBe(0o711);
    expect(await stat(task.workDir)).toMatchObject({ uid: nobody.uid, gid: nobody.gid });
    await task.dispose();
    expect(existsSync(task.workDir)).toBe(false);
    await removeWorkRootIfEmpty(dataDir);
    expect(existsSync(workRoot)).toBe(false);
  });

  it('still stops the task and its children on timeout', async () => {
    const task = await start(['sh', '-c', 'sleep 100 & wait'], nobody, { timeoutSeconds: 1 });
    expect((await task.outcome).kind).toBe('timeout');
  });

  it('hashes nothing of the host when the task swaps its output dir for a link', async () => {
    const task = await start(['sh', '-c', `rm -r "$GPUAI_OUTPUT_DIR" && ln -s ${secretDir} "$GPUAI_OUTPUT_DIR"`]);
    expect(await task.outcome).toEqual({ kind: 'error', message: expect.stringContaining('no longer a directory') });
  });

  it('says so when the task user cannot reach its work dir', async () => {
    const closed = join(secretDir, 'closed');
    await mkdir(closed, { mode: 0o700 });
    await chmod(secretDir, 0o700);
    const task = await startProcessTask(testOpenedAssignment(['true']), {
      dataDir,
      workRoot: join(closed, 'work'),
      taskUser: nobody,
    });
    expect(await task.outcome).toEqual({
      kind: 'error',
      message: expect.stringContaining(`${closed} (mode 700) does not let the task user nobody`),
    });
  });
});
