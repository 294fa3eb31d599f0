import { spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { JobWithTasks } from '../../protocol/index.js';
import { Api, adminKeyOf, fastTimings, freePort, Proc, repoRoot, tempDir, waitFor } from '../support/processes.js';

/**
 * `npm start` (node bin/gpuai.js start) as a new user meets it: a port someone else holds, a
 * second launcher on the same data dir, a launcher killed with SIGKILL, and logs read by a machine.
 */

const root = tempDir('launcher');
const procs: Proc[] = [];
const servers: Server[] = [];

afterAll(async () => {
  await Promise.all(procs.map((p) => p.kill('SIGKILL')));
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  root.remove();
});

function launch(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const proc = new Proc(
    spawn(process.execPath, [join(repoRoot, 'bin', 'gpuai.js'), 'start', ...args], {
      env: { ...process.env, ...fastTimings, GPUAI_ENROLLMENT: 'open', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
  procs.push(proc);
  return proc;
}

/** How the process ended, or a failure naming what it printed if it is still running after `ms`. */
async function exitWithin(proc: Proc, ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still running after ${ms} ms; it printed:\n${proc.tail()}`)), ms);
  });
  try {
    return await Promise.race([proc.exited, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function occupy(port: number): Promise<void> {
  const server = createServer();
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
}

// Starting a process that loads TypeScript through tsx takes seconds on a loaded machine; a
// launcher that hangs never exits, so any generous bound tells the two apart.
const exitBoundMs = 60_000;

describe('gpuai start on a port already taken', () => {
  it('says the port is in use and exits non-zero, having written nothing to the data dir', async () => {
    const port = await freePort();
    await occupy(port);
    const dataDir = join(root.path, 'port-taken');
    const start = launch(['--no-agent', '--port', String(port), '--data-dir', dataDir]);
    const exit = await exitWithin(start, exitBoundMs);
    expect(exit.code).toBe(1);
    expect(start.tail()).toContain(`port ${port} on 127.0.0.1 is already in use`);
    expect(existsSync(dataDir) ? readdirSync(dataDir) : []).toEqual([]);
  }, 90_000);
});

describe('the data dir lock', () => {
  it('refuses a second launcher on the same data dir, naming the holder, and is taken over once the holder is SIGKILLed', async () => {
    const dataDir = join(root.path, 'locked');
    const port1 = await freePort();
    const first = launch(['--no-agent', '--port', String(port1), '--data-dir', dataDir]);
    await waitFor('the first launcher', () => new Api(`http://127.0.0.1:${port1}`).healthy(), 60_000);
    const key = adminKeyOf(dataDir);

    const port2 = await freePort();
    const second = launch(['--no-agent', '--port', String(port2), '--data-dir', dataDir]);
    const exit = await exitWithin(second, exitBoundMs);
    expect(exit.code).toBe(1);
    expect(second.tail()).toContain(`is in use by another gpuai start (pid ${first.child.pid})`);
    await expect(fetch(`http://127.0.0.1:${port2}/healthz`)).rejects.toThrow();

    await first.kill('SIGKILL');
    const third = launch(['--no-agent', '--port', String(port2), '--data-dir', dataDir]);
    const api = new Api(`http://127.0.0.1:${port2}`, key);
    await waitFor('the launcher after a SIGKILLed one', () => api.healthy(), 60_000);
    // The same data dir, taken over: the admin key of the first start still opens it.
    expect(await api.jobs()).toEqual([]);
    expect(adminKeyOf(dataDir)).toBe(key);
    await third.kill('SIGTERM');
    expect((await third.exited).code).toBe(0);
  }, 180_000);
});

describe('GPUAI_LOG_FORMAT=json', () => {
  it('makes every line the launcher prints one JSON object with time, level and msg, its agent’s lines included', async () => {
    const port = await freePort();
    const dataDir = join(root.path, 'json-logs');
    const start = launch(['--port', String(port), '--data-dir', dataDir], { GPUAI_LOG_FORMAT: 'json' });
    const api = new Api(`http://127.0.0.1:${port}`, () => adminKeyOf(dataDir));
    await waitFor('the launcher', () => api.healthy(), 60_000);
    const job = await api.submit({ name: 'json-logs', command: ['sh', '-c', 'echo hello'] });
    const done = await waitFor(
      'the job to finish',
      async () => {
        const j: JobWithTasks = await api.job(job.id);
        return j.status === 'succeeded' || j.status === 'failed' ? j : undefined;
      },
      60_000,
      200,
    );
    expect(done.status).toBe('succeeded');
    await start.kill('SIGTERM');

    const lines = start.output
      .join('')
      .split('\n')
      .filter((line) => line !== '');
    const entries = lines.map((line) => {
      let parsed: unknown;
      expect(() => {
        parsed = JSON.parse(line);
      }, line).not.toThrow();
      return parsed as Record<string, unknown>;
    });
    for (const [i, entry] of entries.entries()) {
      expect(entry, lines[i]).toEqual(
        expect.objectContaining({
          time: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
          level: expect.stringMatching(/^(debug|info|warn|error)$/),
          msg: expect.any(String),
        }),
      );
    }
    const agent = entries.filter((e) => e.source === 'agent');
    expect(agent.length).toBeGreaterThan(0);
    // The agent's own fields arrive as fields, not as a JSON string inside msg.
    for (const entry of agent) expect(String(entry.msg)).not.toMatch(/^\s*[{[]|\[agent\]/);
    expect(entries.some((e) => e.url === `http://127.0.0.1:${port}`)).toBe(true);
  }, 120_000);
});
