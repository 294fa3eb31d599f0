import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { JobSpecInput, JobView, JobWithTasks } from '../../protocol/index.js';

export const repoRoot = resolve(import.meta.dirname, '../..');
const bin = (name: string) => join(repoRoot, 'bin', name);

/** Fast timings so that lost leases and restarts show within seconds. */
export const fastTimings = {
  GPUAI_LEASE_MS: '3000',
  GPUAI_HEARTBEAT_IDLE_MS: '500',
  GPUAI_HEARTBEAT_BUSY_MS: '500',
  GPUAI_REAPER_INTERVAL_MS: '200',
};

export function tempDir(prefix: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `gpuai-${prefix}-`));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

export async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() =>
        typeof address === 'object' && address ? resolvePort(address.port) : reject(new Error('no port')),
      );
    });
  });
}

/** A child process whose output is kept for the failure message. */
export class Proc {
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  constructor(readonly child: ChildProcess) {
    const keep = (chunk: Buffer) => {
      this.output.push(chunk.toString());
      if (this.output.length > 400) this.output.splice(0, 100);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    this.exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  }
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }
  kill(signal: NodeJS.Signals): Promise<unknown> {
    if (this.alive) this.child.kill(signal);
    return this.exited;
  }
  tail(): string {
    return this.output.join('').slice(-4000);
  }
}

/**
 * `gpuai start --no-agent`. Open enrollment unless `env` says otherwise: the agents of tests that
 * are not about enrollment join without a token (test/e2e/enrollment.test.ts joins with one).
 */
export function startControlPlane(port: number, dataDir: string, env: NodeJS.ProcessEnv = {}): Proc {
  return new Proc(
    spawn(process.execPath, [bin('gpuai.js'), 'start', '--no-agent', '--port', String(port), '--data-dir', dataDir], {
      env: { ...process.env, ...fastTimings, GPUAI_ENROLLMENT: 'open', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    }),
  );
}

/**
 * The Node that runs agents: the host's (`node` on PATH), which `npm ci` built the native modules
 * for (the agent locks its data dir through SQLite). The Node 22 lane runs the tests themselves on
 * Lambda's Node; a contributor's agent does not change with it.
 */
const hostNode = 'node';

/** `gpuai-agent run`; `env` may carry GPUAI_JOIN_TOKEN. */
export function startAgent(api: string, dataDir: string, name: string, env: NodeJS.ProcessEnv = {}): Proc {
  return new Proc(
    spawn(
      hostNode,
      [
        bin('gpuai-agent.js'),
        'run',
        '--api',
        api,
        '--runtime',
        'process',
        '--data-dir',
        dataDir,
        '--name',
        name,
        '--poll-wait',
        '2',
      ],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] },
    ),
  );
}

/** Runs the `gpuai` CLI to completion. */
export function runCli(
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, [bin('gpuai.js'), ...args], {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code) => done({ code, stdout, stderr }));
  });
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch {
      // not yet: the server may still be starting
    }
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The admin key that the embedded control plane wrote to `<dataDir>/admin-key` on first start. */
export function adminKeyOf(dataDir: string): string {
  return readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();
}

/**
 * A small typed client of the application API. `apiKey` is the key or a function that reads it
 * when a request is made (an embedded control plane writes its admin key only once it has started).
 */
export class Api {
  constructor(
    readonly url: string,
    private readonly apiKey?: string | (() => string),
  ) {}
  private fetch(path: string, init: RequestInit = {}): Promise<Response> {
    const key = typeof this.apiKey === 'function' ? this.apiKey() : this.apiKey;
    const headers = new Headers(init.headers);
    if (key !== undefined) headers.set('authorization', `Bearer ${key}`);
    return fetch(`${this.url}${path}`, { ...init, headers });
  }
  async healthy(): Promise<true | undefined> {
    const r = await fetch(`${this.url}/healthz`);
    return r.ok ? true : undefined;
  }
  async submit(spec: JobSpecInput, key?: string): Promise<JobWithTasks> {
    const r = await this.fetch('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
      body: JSON.stringify(spec),
    });
    if (!r.ok) throw new Error(`submit: ${r.status} ${await r.text()}`);
    return (await r.json()) as JobWithTasks;
  }
  async job(id: string): Promise<JobWithTasks> {
    const r = await this.fetch(`/v1/jobs/${id}`);
    if (!r.ok) throw new Error(`job ${id}: ${r.status} ${await r.text()}`);
    return (await r.json()) as JobWithTasks;
  }
  async nodes(): Promise<{ id: string; status: string }[]> {
    const r = await this.fetch('/v1/nodes');
    if (!r.ok) throw new Error(`nodes: ${r.status} ${await r.text()}`);
    return ((await r.json()) as { nodes: { id: string; status: string }[] }).nodes;
  }
  async liveNodes(): Promise<number> {
    return (await this.nodes()).filter((n) => n.status === 'live').length;
  }
  /** Waits until every job has finished, whatever its outcome, and returns them. */
  async finished(jobs: readonly { id: string }[], timeoutMs: number): Promise<JobWithTasks[]> {
    // One listing per probe, not one request per job: polling fifty jobs every 300 ms would be
    // ten thousand requests a minute, far past the per-key rate limit.
    const ids = new Set(jobs.map((j) => j.id));
    await waitFor(
      'every job to finish',
      async () => {
        const listed = (await this.jobs()).filter((j) => ids.has(j.id));
        const done = listed.filter((j) => ['succeeded', 'failed', 'cancelled'].includes(j.status));
        return done.length === ids.size ? true : undefined;
      },
      timeoutMs,
      300,
    );
    return Promise.all(jobs.map((j) => this.job(j.id)));
  }
  async jobs(): Promise<JobView[]> {
    const all: JobView[] = [];
    let cursor: string | undefined;
    do {
      const r = await this.fetch(`/v1/jobs?limit=200${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      if (!r.ok) throw new Error(`jobs: ${r.status} ${await r.text()}`);
      const page = (await r.json()) as { jobs: JobView[]; cursor?: string };
      all.push(...page.jobs);
      cursor = page.cursor;
    } while (cursor);
    return all;
  }
}

export function nodeIdOf(agentDataDir: string): string {
  return (JSON.parse(readFileSync(join(agentDataDir, 'identity.json'), 'utf8')) as { nodeId: string }).nodeId;
}
