import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobSpecInput, type JobWithTasks, resultHash, sha256Hex } from '../../protocol/index.js';
import {
  Api,
  adminKeyOf,
  freePort,
  nodeIdOf,
  type Proc,
  runCli,
  startAgent,
  startControlPlane,
  tempDir,
  waitFor,
} from '../support/processes.js';

/**
 * The embedded control plane and three real agent processes over real HTTP: 50 jobs of 1-4
 * tasks, one agent SIGKILLed while it runs a task. Every task must complete exactly once, the
 * lost lease must show in the task's attempts, and each result hash must be the hash of what the
 * task's command printed.
 */

const line = 'echo "job $GPUAI_JOB_ID task $GPUAI_TASK_INDEX of $GPUAI_TASK_COUNT"';
const printed = (job: string, index: number, count: number) => `job ${job} task ${index} of ${count}\n`;
const expectedHash = (stdout: string) =>
  resultHash([{ name: 'stdout', sha256: sha256Hex(stdout), bytes: Buffer.byteLength(stdout) }]);

const dirs = [tempDir('cp'), tempDir('agent0'), tempDir('agent1'), tempDir('agent2')];
const [cpDir, ...agentDirs] = dirs as [ReturnType<typeof tempDir>, ...ReturnType<typeof tempDir>[]];
let controlPlane: Proc;
let agents: Proc[] = [];
let api: Api;

beforeAll(async () => {
  const port = await freePort();
  api = new Api(`http://127.0.0.1:${port}`, () => adminKeyOf(cpDir.path));
  controlPlane = startControlPlane(port, cpDir.path);
  await waitFor('the control plane', () => api.healthy(), 30_000);
  agents = agentDirs.map((d, i) => startAgent(api.url, d.path, `agent-${i}`));
  await waitFor('three live nodes', async () => ((await api.liveNodes()) === 3 ? true : undefined), 30_000);
}, 90_000);

afterAll(async () => {
  await Promise.all(agents.map((a) => a.kill('SIGKILL')));
  await controlPlane?.kill('SIGKILL');
  for (const d of dirs) d.remove();
});

describe('three agents, fifty jobs, one agent killed', () => {
  it('completes every task exactly once and shows the lost lease', async () => {
    // The first job is slow so that there is a running task to kill; the rest are quick.
    const specs: JobSpecInput[] = [
      { name: 'slow', command: ['sh', '-c', `sleep 4; ${line}`], tasks: 1 },
      ...Array.from({ length: 49 }, (_, i) => ({
        name: `quick-${i}`,
        command: ['sh', '-c', `sleep 0.1; ${line}`],
        tasks: 1 + (i % 4),
      })),
    ];
    const submitted = await Promise.all(specs.map((s, i) => api.submit(s, `e2e-${i}`)));
    const slow = submitted[0] as JobWithTasks;

    const victim = await waitFor('the slow task to run', async () => {
      const task = (await api.job(slow.id)).tasks[0];
      return task?.state === 'running' ? task.nodeId : undefined;
    });
    const victimIndex = agentDirs.findIndex((d) => nodeIdOf(d.path) === victim);
    expect(victimIndex).toBeGreaterThanOrEqual(0);
    const killedAt = Date.now();
    await agents[victimIndex]?.kill('SIGKILL');

    const finished = await api.finished(submitted, 120_000);

    expect(finished.map((j) => j.status)).toEqual(submitted.map(() => 'succeeded'));
    const taskCount = specs.reduce((n, s) => n + (s.tasks ?? 1), 0);
    expect(finished.flatMap((j) => j.tasks)).toHaveLength(taskCount);
    for (const job of finished) {
      for (const task of job.tasks) {
        expect(task.state).toBe('verified');
        const completed = task.attempts.filter((a) => a.outcome === 'completed');
        expect(completed).toHaveLength(1); // exactly once
        expect(task.result?.exitCode).toBe(0);
        const stdout = printed(job.id, task.index, job.tasks.length);
        expect(task.result?.resultHash).toBe(expectedHash(stdout));
        expect(task.result?.logTail).toContain(stdout.trim());
        // Nothing was started on the dead agent after it died.
        for (const a of task.attempts.filter((x) => x.nodeId === victim)) {
          expect(Date.parse(a.assignedAt)).toBeLessThan(killedAt);
        }
      }
    }

    const lost = (finished[0] as JobWithTasks).tasks[0];
    expect(lost?.attempt).toBe(2);
    expect(lost?.attempts.map((a) => [a.nodeId === victim, a.outcome])).toEqual([
      [true, 'lease-expired'],
      [false, 'completed'],
    ]);
    expect(lost?.nodeId ?? lost?.attempts[1]?.nodeId).not.toBe(victim);

    const nodes = {
      nodes: (await api.nodes()) as {
        id: string;
        status: string;
        stats: { leasesLost: number; tasksCompleted: number };
      }[],
    };
    const dead = nodes.nodes.find((n) => n.id === victim);
    expect(dead?.status).toBe('unavailable');
    expect(dead?.stats.leasesLost).toBeGreaterThanOrEqual(1);
    const completedByNodes = nodes.nodes.reduce((n, x) => n + x.stats.tasksCompleted, 0);
    expect(completedByNodes).toBe(taskCount);

    // The CLI shows the same job as the API.
    // The CLI finds the admin key in the control plane's data dir, as on the machine that runs it.
    const cli = await runCli(['jobs', 'get', slow.id, '--json', '--api', api.url], { GPUAI_DATA_DIR: cpDir.path });
    expect(cli.code).toBe(0);
    const shown = JSON.parse(cli.stdout) as JobWithTasks;
    expect(shown.status).toBe('succeeded');
    expect(shown.tasks[0]?.result?.resultHash).toBe(lost?.result?.resultHash);
  }, 180_000);
});
