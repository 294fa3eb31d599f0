import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorBody } from '../../protocol/common.js';
import { JobSpec } from '../../protocol/job.js';
import { type FakeControlPlane, fakeJobId, startFakeControlPlane } from '../testing/fake-control-plane.js';
import { runGpuai, type TestRunOptions } from '../testing/run-cli.js';

let fake: FakeControlPlane;
beforeAll(async () => {
  fake = await startFakeControlPlane();
});
afterAll(() => fake.close());

const gpuai = (args: readonly string[], options: TestRunOptions = {}) =>
  runGpuai(args, { ...options, env: { GPUAI_API: fake.url, ...options.env } });

const lastRequest = () => {
  const request = fake.requests.at(-1);
  if (request === undefined) throw new Error('no request reached the fake');
  return request;
};

describe('jobs submit', () => {
  it('sends the spec with an Idempotency-Key and prints the job id', async () => {
    const run = await gpuai(['jobs', 'submit', '--command', 'echo hello', '--gpus', 'H100:8', '--tasks', '2']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/^job_[0-9A-Z]{26}\n$/);
    const request = lastRequest();
    expect(request.method).toBe('POST');
    expect(request.headers['idempotency-key']).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(request.body)).toMatchObject({
      command: ['sh', '-c', 'echo hello'],
      resources: { gpus: { count: 8, models: ['H100'] } },
      tasks: 2,
    });
  });

  it('takes the argv after -- verbatim, even when it looks like options', async () => {
    const run = await gpuai(['jobs', 'submit', '--gpus', '1', '--', 'python', 'train.py', '--lr', '3e-4', '--json']);
    expect(run.code).toBe(0);
    expect(JSON.parse(lastRequest().body).command).toEqual(['python', 'train.py', '--lr', '3e-4', '--json']);
    // --json after -- belongs to the job, so the CLI prints the human id.
    expect(run.stdout).toMatch(/^job_\w+\n$/);
  });

  it('prints exactly the API body with --json, and returns the same job for a reused key', async () => {
    const args = ['jobs', 'submit', '--json', '--command', 'nvidia-smi', '--idempotency-key', 'deploy-42'];
    const first = await gpuai(args);
    expect(first.code).toBe(0);
    expect(lastRequest().headers['idempotency-key']).toBe('deploy-42');
    const job = JSON.parse(first.stdout);
    expect(JSON.stringify(job)).toBe(first.stdout.trim());
    expect(JobSpec.parse(job.spec).command).toEqual(['sh', '-c', 'nvidia-smi']);

    const again = await gpuai(args.filter((arg) => arg !== '--json'));
    expect(again.stdout).toBe(`${job.id}\n`);
    expect(again.stderr).toContain('already used with the same spec');
  });

  it('retries a transient failure with the same Idempotency-Key', async () => {
    const before = fake.requests.length;
    fake.inject('drop', 503);
    const run = await gpuai(['jobs', 'submit', '--command', 'echo retried']);
    expect(run.code).toBe(0);
    const attempts = fake.requests.slice(before);
    expect(attempts).toHaveLength(3);
    expect(new Set(attempts.map((request) => request.headers['idempotency-key'])).size).toBe(1);
  });

  it('merges --file with the flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gpuai-cli-'));
    const file = join(dir, 'spec.json');
    await writeFile(file, JSON.stringify({ name: 'render', command: ['./render.sh'], env: { A: '1' }, tasks: 2 }));
    const run = await gpuai(['jobs', 'submit', '--file', file, '--tasks', '4', '-e', 'B=2']);
    expect(run.code).toBe(0);
    expect(JSON.parse(lastRequest().body)).toMatchObject({
      name: 'render',
      command: ['./render.sh'],
      env: { A: '1', B: '2' },
      tasks: 4,
    });
  });

  it('refuses an invalid spec before sending anything (exit 2)', async () => {
    const before = fake.requests.length;
    const run = await gpuai(['jobs', 'submit', '--command', 'x', '--tasks', '65', '--vendor', 'ibm']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('error: the job spec is invalid');
    expect(run.stderr).toMatch(/ {2}tasks \(--tasks\): .*64/);
    expect(run.stderr).toMatch(/ {2}resources\.gpus\.vendor \(--vendor\): /);
    expect(fake.requests.length).toBe(before);
  });

  it('reports an invalid spec as the API error shape with --json', async () => {
    const run = await gpuai(['jobs', 'submit', '--json', '--command', 'x', '--retries', '11']);
    expect(run.code).toBe(2);
    const body = ErrorBody.parse(JSON.parse(run.stderr));
    expect(body.error.code).toBe('validation_failed');
    expect(body.error.details).toEqual({
      issues: [{ path: 'retries', code: 'too_big', message: expect.stringContaining('10'), flag: '--retries' }],
      target: 'body',
    });
  });

  it('refuses unparseable flags and unreadable files (exit 2)', async () => {
    const gpus = await gpuai(['jobs', 'submit', '--command', 'x', '--gpus', 'H100:lots']);
    expect(gpus).toMatchObject({ code: 2, stdout: '' });
    expect(gpus.stderr).toContain('--gpus expects N, MODEL:N');
    const file = await gpuai(['jobs', 'submit', '--file', '/nonexistent/spec.json']);
    expect(file.code).toBe(2);
    expect(file.stderr).toContain('--file /nonexistent/spec.json: cannot read it (ENOENT)');
  });

  it('prints the spec and sends nothing with --dry-run', async () => {
    const before = fake.requests.length;
    const run = await gpuai(['jobs', 'submit', '--dry-run', '--gpus', '2', '--', 'nvidia-smi']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ command: ['nvidia-smi'], resources: { gpus: { count: 2 } } });
    expect(fake.requests.length).toBe(before);
  });
});

describe('jobs get, tasks, cancel', () => {
  it('shows a job with its task table', async () => {
    const job = fake.addJob({ name: 'hello', tasks: 2 }, 'succeeded');
    const run = await gpuai(['jobs', 'get', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^id +${job.id}$`, 'm'));
    expect(run.stdout).toMatch(/^status +succeeded$/m);
    expect(run.stdout).toMatch(/^tasks +2 \(2 verified\)$/m);
    expect(run.stdout).toMatch(/^TASK +STATE +ATTEMPT +NODE +EXIT +RESULT +DURATION$/m);
    expect(run.stdout).toMatch(/^ {3}1 +verified +1\/3 +node_\w+ +0 +abababababab +2s$/m);
  });

  it('shows why tasks failed', async () => {
    const job = fake.addJob({ tasks: 2 }, 'failed');
    const run = await gpuai(['jobs', 'get', job.id]);
    expect(run.stdout).toContain('task 0: task_failed: exit code 1 on every attempt');
  });

  it('prints the body verbatim with --json', async () => {
    const job = fake.addJob();
    const run = await gpuai(['--json', 'jobs', 'get', job.id]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toEqual(JSON.parse(JSON.stringify(job)));
  });

  it('renders a 404 with exit code 4, and passes the error body through with --json', async () => {
    const missing = fakeJobId(999);
    const human = await gpuai(['jobs', 'get', missing]);
    expect(human).toMatchObject({ code: 4, stdout: '' });
    expect(human.stderr).toBe(`error: job ${missing} not found\n  HTTP 404 job_not_found (request req_1)\n`);

    const json = await gpuai(['jobs', 'get', missing, '--json']);
    expect(json.code).toBe(4);
    expect(JSON.parse(json.stderr)).toEqual({
      error: { code: 'job_not_found', message: `job ${missing} not found`, requestId: 'req_1' },
    });
  });

  it("lists a job's tasks", async () => {
    const job = fake.addJob({ tasks: 3 }, 'running');
    const run = await gpuai(['jobs', 'tasks', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(4);
    expect(run.stdout).toMatch(/^ {3}2 +running +1\/3 +node_\w+ +- +- +/m);
  });

  it('cancels, and reports a second cancel as a 409', async () => {
    const job = fake.addJob({ tasks: 2 }, 'running');
    const run = await gpuai(['jobs', 'cancel', job.id]);
    expect(run).toMatchObject({ code: 0, stdout: `${job.id} cancelled: 2 cancelled\n` });
    const again = await gpuai(['jobs', 'cancel', job.id]);
    expect(again.code).toBe(4);
    expect(again.stderr).toContain('HTTP 409 job_finished');
  });
});

describe('jobs list', () => {
  it('pages with --limit and --cursor, and follows every cursor with --all', async () => {
    const fresh = await startFakeControlPlane();
    try {
      const ids = [1, 2, 3].map(() => fresh.addJob({ name: 'batch' }).id);
      const env = { GPUAI_API: fresh.url };
      const first = await runGpuai(['jobs', 'list', '--limit', '2'], { env });
      expect(first.code).toBe(0);
      const rows = first.stdout.trim().split('\n');
      expect(rows[0]).toMatch(/^ID +NAME +STATUS +TASKS +GPUS +CREATED$/);
      expect(rows.slice(1).map((row) => row.split(' ')[0])).toEqual([ids[2], ids[1]]);
      expect(first.stderr).toBe('more: gpuai jobs list --cursor 2 (or --all)\n');

      const second = await runGpuai(['jobs', 'list', '--limit', '2', '--cursor', '2'], { env });
      expect(second.stdout).toContain(ids[0]);
      expect(second.stderr).toBe('');

      const all = await runGpuai(['jobs', 'list', '--all', '--limit', '1', '--json'], { env });
      expect(JSON.parse(all.stdout).jobs.map((job: { id: string }) => job.id)).toEqual([...ids].reverse());
      expect(fresh.requests.filter((r) => r.path.startsWith('/v1/jobs?'))).toHaveLength(2 + 3);
    } finally {
      await fresh.close();
    }
  });

  it('filters by status, and refuses unknown statuses and limits', async () => {
    await gpuai(['jobs', 'list', '--status', 'failed']);
    expect(lastRequest().path).toBe('/v1/jobs?status=failed');
    const status = await gpuai(['jobs', 'list', '--status', 'done']);
    expect(status.code).toBe(2);
    expect(status.stderr).toContain(
      '--status expects one of queued, running, succeeded, failed, cancelled, got "done"',
    );
    const limit = await gpuai(['jobs', 'list', '--limit', '500']);
    expect(limit.code).toBe(2);
    expect(limit.stderr).toContain('--limit must be between 1 and 200');
  });
});

describe('jobs wait', () => {
  const wait = (id: string, ...more: string[]) => gpuai(['jobs', 'wait', id, '--interval', '100ms', ...more]);

  it('polls until the job succeeds, exits 0, prints progress lines only on change', async () => {
    const job = fake.addJob({ tasks: 2 });
    fake.script(job.id, ['queued', 'running', 'running', 'succeeded']);
    const run = await wait(job.id);
    expect(run.code).toBe(0);
    expect(run.stderr.split('\n')).toEqual([
      `${job.id} queued: 2 queued`,
      `${job.id} running: 2 running`,
      `${job.id} succeeded: 2 verified`,
      '',
    ]);
    expect(run.stdout).toMatch(/^status +succeeded$/m);
  });

  it('exits 1 when the job fails, and 1 when it is cancelled', async () => {
    const failed = fake.addJob();
    fake.script(failed.id, ['running', 'failed']);
    expect((await wait(failed.id)).code).toBe(1);
    const cancelled = fake.addJob({}, 'cancelled');
    const run = await wait(cancelled.id, '--json');
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout).status).toBe('cancelled');
  });

  it('exits 124 when its own timeout passes first', async () => {
    const job = fake.addJob({}, 'running');
    const run = await wait(job.id, '--timeout', '300ms');
    expect(run.code).toBe(124);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(`error: gave up after 300ms: job ${job.id} is still running (1 running)`);
  });

  it('rides out a dropped connection and a 503, saying so on stderr', async () => {
    const job = fake.addJob();
    fake.script(job.id, ['running', 'running', 'succeeded']);
    const polls = fake.requests.length;
    const waiting = wait(job.id);
    // Let the first poll through, then break the next two.
    while (fake.requests.length === polls) await new Promise((resolve) => setTimeout(resolve, 5));
    fake.inject('drop', 503);
    const run = await waiting;
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/lost the control plane at http:\/\/127\.0\.0\.1:\d+ \(.+\); retrying in 1s/);
    expect(run.stderr).toContain('injected fault; retrying in 2s');
    expect(run.stderr).toContain('reconnected to the control plane');
  }, 10_000);

  it('draws one updating line on a terminal and clears it before the result', async () => {
    const job = fake.addJob();
    fake.script(job.id, ['running', 'succeeded']);
    const run = await gpuai(['jobs', 'wait', job.id, '--interval', '100ms'], { tty: true });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(new RegExp(`^${job.id} running: 1 running \\(\\d+s\\)`));
    expect(run.stderr).toContain(`\r\u001b[2K${job.id} succeeded: 1 verified`);
    expect(run.stderr.endsWith('\r\u001b[2K')).toBe(true);
    expect(run.stderr).not.toContain('\n');
  });

  it('fails at once for an unknown job (exit 4)', async () => {
    const run = await wait(fakeJobId(998));
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('job_not_found');
  });
});

describe('reachability and usage', () => {
  it('names the URL when nothing answers (exit 3), in both output modes', async () => {
    const down = await startFakeControlPlane();
    await down.close();
    const human = await runGpuai(['jobs', 'list'], { env: { GPUAI_API: down.url } });
    expect(human.code).toBe(3);
    expect(human.stderr).toContain(
      `cannot reach the control plane at ${down.url}: is \`npm start\` running? (ECONNREFUSED`,
    );
    const json = await runGpuai(['jobs', 'list', '--json', '--api', down.url]);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stderr).error.code).toBe('unreachable');
  });

  it('exits 2 for unknown options and bad --api values', async () => {
    const unknown = await gpuai(['jobs', 'list', '--colour']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("error: unknown option '--colour'");
    const json = await gpuai(['jobs', 'list', '--colour', '--json']);
    expect(JSON.parse(json.stderr)).toEqual({ error: { code: 'usage_error', message: "unknown option '--colour'" } });
    const api = await gpuai(['jobs', 'list', '--api', 'localhost:8787']);
    expect(api.code).toBe(2);
    expect(api.stderr).toContain('--api expects an http(s) URL');
  });

  it('colours only terminals without NO_COLOR', async () => {
    const job = fake.addJob({}, 'succeeded');
    const tty = await gpuai(['jobs', 'get', job.id], { tty: true });
    expect(tty.stdout).toContain('\u001b[32msucceeded\u001b[39m');
    const noColor = await gpuai(['jobs', 'get', job.id], { tty: true, env: { NO_COLOR: '1' } });
    expect(noColor.stdout).not.toContain('\u001b[');
    const piped = await gpuai(['jobs', 'get', job.id]);
    expect(piped.stdout).not.toContain('\u001b[');
  });
});
