import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterAll, describe, expect, it } from 'vitest';
import type { JobWithTasks } from '../../protocol/index.js';
import { Api, adminKeyOf, freePort, Proc, repoRoot, runCli, tempDir, waitFor } from '../support/processes.js';

/**
 * A reviewer's attack on `npm start`: a job run by the local agent's process runtime looked up the
 * control plane's directory through `/proc/$PPID/cwd` and read its admin key and master key. Run
 * as root, the local agent now runs tasks as `nobody`, which can read none of them.
 */

const dataDir = tempDir('task-user');
const stateDir = join(dataDir.path, 'state');
let start: Proc | undefined;

afterAll(async () => {
  // npm, the control plane and its agent share the group: stop them all, as Ctrl-C would.
  const group = start?.child.pid;
  if (start?.alive && group !== undefined) {
    process.kill(-group, 'SIGINT');
    await Promise.race([start.exited, delay(20_000)]);
  }
  if (group !== undefined) {
    try {
      process.kill(-group, 'SIGKILL');
    } catch {
      // ESRCH: all gone.
    }
  }
  dataDir.remove();
});

describe.runIf(process.getuid?.() === 0)('process runtime under npm start as root', () => {
  it("runs a job as nobody, which reads neither the control plane's keys nor the agent's", async () => {
    const port = await freePort();
    start = new Proc(
      spawn('npm', ['start', '--silent'], {
        cwd: repoRoot,
        env: { ...process.env, PORT: String(port), GPUAI_DATA_DIR: stateDir },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      }),
    );
    const api = new Api(`http://127.0.0.1:${port}`);
    await waitFor('npm start', () => api.healthy(), 60_000);

    const attack = [
      'id -u',
      'readlink /proc/$PPID/cwd && echo LEAK-cwd',
      `cat ${join(stateDir, 'admin-key')} && echo LEAK-admin-key`,
      `cat ${join(stateDir, 'master.key')} > /dev/null && echo LEAK-master-key`,
      `ls ${join(stateDir, 'agent')} && echo LEAK-agent-dir`,
      'echo end',
    ].join('; ');
    const env = { GPUAI_API: api.url, GPUAI_DATA_DIR: stateDir };
    const submitted = await runCli(['jobs', 'submit', '--command', attack, '--gpus', '0', '--json'], env);
    expect(submitted.code).toBe(0);
    const job = JSON.parse(submitted.stdout) as JobWithTasks;
    const waited = await runCli(['jobs', 'wait', job.id, '--json', '--timeout', '60s'], env);
    expect(waited.code).toBe(0);

    const logs = await runCli(['jobs', 'logs', job.id], env);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain('65534');
    expect(logs.stdout).toContain('end');
    expect(logs.stdout).toContain('Permission denied');
    expect(logs.stdout).not.toContain('LEAK');
    expect(logs.stdout).not.toContain(adminKeyOf(stateDir));
    expect(logs.stdout).not.toContain(repoRoot);
    expect(start.tail()).toContain('the process runtime runs tasks as nobody');
  }, 120_000);
});
