import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorBody } from '../../protocol/common.js';
import { resultHash, sha256Hex } from '../../protocol/index.js';
import { type JobList, JobSpec, type JobStatus, type JobWithTasks } from '../../protocol/job.js';
import { startFaultProxy } from '../../test/support/fault-proxy.js';
import { startTestControlPlane, type TestControlPlane, taskStdout } from '../testing/control-plane.js';
import { runGpuai, type TestRunOptions } from '../testing/run-cli.js';

/** `gpuai jobs ...` in-process against the real embedded control plane, behind the fault proxy. */

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(() => cp.stop());

const gpuai = (args: readonly string[], options: TestRunOptions = {}) =>
  runGpuai(args, { ...options, env: { ...cp.env, ...options.env }, io: { fetch: cp.fetch, ...options.io } });

const lastSent = () => {
  const request = cp.sent.at(-1);
  if (request === undefined) throw new Error('the CLI sent nothing');
  return request;
};

/** A job id that is well formed and not in the store. */
const missingJobId = `job_${'0'.repeat(26)}`;
const hash = resultHash([{ name: 'stdout', sha256: sha256Hex(taskStdout), bytes: Buffer.byteLength(taskStdout) }]);

/**
 * A sleep for `jobs wait` that runs the next step instead of waiting: each poll then sees exactly
 * the state the test set, however loaded the machine is.
 */
const stepping = (...steps: (() => unknown)[]) => ({
  sleep: async () => {
    await steps.shift()?.();
  },
});

describe('jobs submit', () => {
  it('sends the spec with an Idempotency-Key and prints the job id', async () => {
    const run = await gpuai(['jobs', 'submit', '--command', 'echo hello', '--gpus', 'H100:8', '--tasks', '2']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(run.stdout).toMatch(/^job_[0-9A-Z]{26}\n$/);
    const request = lastSent();
    expect(request.method).toBe('POST');
    expect(request.headers.get('idempotency-key')).toMatch(/^[0-9a-f-]{36}$/);
    const job = await cp.getJob(run.stdout.trim());
    expect(job.spec).toMatchObject({
      command: ['sh', '-c', 'echo hello'],
      resources: { gpus: { count: 8, models: ['H100'] } },
      tasks: 2,
    });
    expect(job.status).toBe('queued');
  });

  it('takes the argv after -- verbatim, even when it looks like options', async () => {
    const run = await gpuai(['jobs', 'submit', '--gpus', '1', '--', 'python', 'train.py', '--lr', '3e-4', '--json']);
    expect(run.code).toBe(0);
    // --json after -- belongs to the job, so the CLI prints the human id.
    expect(run.stdout).toMatch(/^job_\w+\n$/);
    expect((await cp.getJob(run.stdout.trim())).spec.command).toEqual(['python', 'train.py', '--lr', '3e-4', '--json']);
  });

  it('prints exactly the API body with --json, and returns the same job for a reused key', async () => {
    const args = ['jobs', 'submit', '--json', '--command', 'nvidia-smi', '--idempotency-key', 'deploy-42'];
    const first = await gpuai(args);
    expect(first.code).toBe(0);
    expect(lastSent().headers.get('idempotency-key')).toBe('deploy-42');
    const job = JSON.parse(first.stdout);
    expect(JSON.stringify(job)).toBe(first.stdout.trim());
    expect(JobSpec.parse(job.spec).command).toEqual(['sh', '-c', 'nvidia-smi']);

    const again = await gpuai(args.filter((arg) => arg !== '--json'));
    expect(again.stdout).toBe(`${job.id}\n`);
    expect(again.stderr).toContain('already used with the same spec');

    const other = await gpuai(['jobs', 'submit', '--command', 'nvidia-smi -L', '--idempotency-key', 'deploy-42']);
    expect(other.code).toBe(4);
    expect(other.stderr).toContain('HTTP 409 idempotency_key_reused');
  });

  it('retries a lost answer and a 503 with the same Idempotency-Key, creating one job', async () => {
    const command = `echo retried-${Date.now()}`;
    const before = cp.proxy.requests.length;
    // The first attempt meets a 503; the second creates the job but its answer is lost.
    cp.proxy.failNext(1, 503, undefined, (request) => request.method === 'POST');
    cp.loseAnswers(1, (request, answer) => request.method === 'POST' && answer.status === 201);
    const run = await gpuai(['jobs', 'submit', '--command', command]);
    expect(run.code).toBe(0);
    // The key was the CLI's own: that its retry found the job is no news to the user.
    expect(run.stderr).toBe('');
    const attempts = cp.proxy.requests.slice(before);
    expect(attempts.map((r) => [r.method, r.outcome, r.status])).toEqual([
      ['POST', 'failed', 503],
      ['POST', 'forwarded', 201],
      ['POST', 'forwarded', 200],
    ]);
    expect(new Set(cp.sent.slice(-3).map((request) => request.headers.get('idempotency-key'))).size).toBe(1);
    const { jobs } = await cp.api<JobList>('/v1/jobs?limit=200');
    const created = jobs.filter((job) => job.spec.command.at(-1) === command);
    expect(created.map((job) => job.id)).toEqual([run.stdout.trim()]);
  });

  it('retries an answer it cannot read with the same key: the job exists once, and the user learns its id', async () => {
    const command = `echo garbled-${Date.now()}`;
    cp.proxy.garbleNext(1, undefined, (request) => request.method === 'POST');
    const run = await gpuai(['jobs', 'submit', '--command', command]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const { jobs } = await cp.api<JobList>('/v1/jobs?limit=200');
    expect(jobs.filter((job) => job.spec.command.at(-1) === command).map((job) => job.id)).toEqual([run.stdout.trim()]);
  });

  it('merges --file with the flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'gpuai-cli-'));
    const file = join(dir, 'spec.json');
    await writeFile(file, JSON.stringify({ name: 'render', command: ['./render.sh'], env: { A: '1' }, tasks: 2 }));
    const run = await gpuai(['jobs', 'submit', '--file', file, '--tasks', '4', '-e', 'B=2']);
    expect(run.code).toBe(0);
    expect(JSON.parse(lastSent().body ?? '')).toMatchObject({
      name: 'render',
      command: ['./render.sh'],
      env: { A: '1', B: '2' },
      tasks: 4,
    });
    // The server seals env values; the spec it keeps has both names.
    expect((await cp.getJob(run.stdout.trim())).spec).toMatchObject({
      name: 'render',
      env: { A: '[sealed]', B: '[sealed]' },
      tasks: 4,
    });
  });

  it('sets the priority and makes a gang with --priority and --gang, and refuses a priority out of 0-9', async () => {
    const run = await gpuai(['jobs', 'submit', '--command', 'x', '--tasks', '3', '--priority', '8', '--gang']);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(lastSent().body ?? '')).toMatchObject({ priority: 8, gang: true, tasks: 3 });
    expect((await cp.getJob(run.stdout.trim())).spec).toMatchObject({ priority: 8, gang: true });
    const before = cp.sent.length;
    const bad = await gpuai(['jobs', 'submit', '--command', 'x', '--priority', '12']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--priority');
    expect(cp.sent.length).toBe(before);
    // A gang's 32-task limit is the server's to state: passed on as its error.
    const big = await gpuai(['jobs', 'submit', '--command', 'x', '--tasks', '33', '--gang']);
    expect(big.code).not.toBe(0);
    expect(big.stderr).toContain('gang_too_large');
    const help = await gpuai(['jobs', 'submit', '--help']);
    expect(help.stdout).toMatch(/--priority <0-9>/);
    expect(help.stdout).toMatch(/--gang/);
  });

  it('refuses an invalid spec before sending anything (exit 2)', async () => {
    const before = cp.sent.length;
    const run = await gpuai(['jobs', 'submit', '--command', 'x', '--tasks', '65', '--vendor', 'ibm']);
    expect(run.code).toBe(2);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('error: the job spec is invalid');
    expect(run.stderr).toMatch(/ {2}tasks \(--tasks\): .*64/);
    expect(run.stderr).toMatch(/ {2}resources\.gpus\.vendor \(--vendor\): /);
    expect(cp.sent.length).toBe(before);
  });

  it('passes on the refusal of a GPU model no node can have, and no job is made', async () => {
    const before = (await cp.api<JobList>('/v1/jobs?limit=200')).jobs.length;
    const run = await gpuai(['jobs', 'submit', '--command', 'echo', '--gpus', 'banana:3']);
    expect(run.code).not.toBe(0);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain('unknown_gpu_model');
    expect(run.stderr).toContain('"banana"');
    expect((await cp.api<JobList>('/v1/jobs?limit=200')).jobs.length).toBe(before);
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
    const before = cp.sent.length;
    const run = await gpuai(['jobs', 'submit', '--dry-run', '--gpus', '2', '--', 'nvidia-smi']);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout)).toMatchObject({ command: ['nvidia-smi'], resources: { gpus: { count: 2 } } });
    expect(cp.sent.length).toBe(before);
  });
});

describe('jobs get, tasks, cancel', () => {
  it('shows a job with its task table', async () => {
    const job = await cp.jobIn('succeeded', { name: 'hello', tasks: 2 });
    const run = await gpuai(['jobs', 'get', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^id +${job.id}$`, 'm'));
    expect(run.stdout).toMatch(/^status +succeeded$/m);
    expect(run.stdout).toMatch(/^tasks +2 \(2 verified\)$/m);
    expect(run.stdout).toMatch(/^TASK +STATE +ATTEMPT +NODE +EXIT +RESULT +DURATION$/m);
    expect(run.stdout).toMatch(new RegExp(`^ {3}1 +verified +1/3 +node_\\w+ +0 +${hash.slice(0, 12)} +\\S+$`, 'm'));
  });

  it('shows why tasks failed', async () => {
    const job = await cp.jobIn('failed', { tasks: 2 });
    const run = await gpuai(['jobs', 'get', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^status +failed$/m);
    expect(run.stdout).toMatch(/task 0: \w+: .*exit code 1/);
  });

  it('prints the body verbatim with --json', async () => {
    const job = await cp.jobIn('queued');
    const run = await gpuai(['--json', 'jobs', 'get', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout.trim()).toBe(JSON.stringify(await cp.getJob(job.id)));
  });

  it('renders a 404 with exit code 4, and passes the error body through with --json', async () => {
    const human = await gpuai(['jobs', 'get', missingJobId]);
    expect(human).toMatchObject({ code: 4, stdout: '' });
    expect(human.stderr).toMatch(
      new RegExp(`^error: no job ${missingJobId}\\n {2}HTTP 404 job_not_found \\(request [\\w-]+\\)\\n$`),
    );

    const json = await gpuai(['jobs', 'get', missingJobId, '--json']);
    expect(json.code).toBe(4);
    expect(JSON.parse(json.stderr)).toEqual({
      error: { code: 'job_not_found', message: `no job ${missingJobId}`, requestId: expect.any(String) },
    });
  });

  it("lists a job's tasks", async () => {
    const job = await cp.jobIn('running', { tasks: 3 });
    const run = await gpuai(['jobs', 'tasks', job.id]);
    expect(run.code).toBe(0);
    expect(run.stdout.trim().split('\n')).toHaveLength(4);
    expect(run.stdout).toMatch(/^ {3}2 +running +1\/3 +node_\w+ +- +- +/m);
  });

  it('cancels, and reports a second cancel as a 409', async () => {
    const job = await cp.jobIn('running', { tasks: 2 });
    const run = await gpuai(['jobs', 'cancel', job.id]);
    expect(run).toMatchObject({ code: 0, stdout: `${job.id} cancelled: 2 cancelled\n` });
    expect((await cp.getJob(job.id)).status).toBe('cancelled');
    const again = await gpuai(['jobs', 'cancel', job.id]);
    expect(again.code).toBe(4);
    expect(again.stderr).toContain('HTTP 409 job_finished');
  });
});

describe('jobs list', () => {
  it('pages with --limit and --cursor, and follows every cursor with --all', async () => {
    const fresh = await startTestControlPlane();
    try {
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push((await fresh.jobIn('queued', { name: 'batch' })).id);
      const env = fresh.env;
      const first = await runGpuai(['jobs', 'list', '--limit', '2'], { env });
      expect(first.code).toBe(0);
      const rows = first.stdout.trim().split('\n');
      expect(rows[0]).toMatch(/^ID +NAME +STATUS +TASKS +PRIO +GPUS +CREATED$/);
      expect(rows.slice(1).map((row) => row.split(' ')[0])).toEqual([ids[2], ids[1]]);
      const cursor = /^more: gpuai jobs list --cursor (\S+) \(or --all\)\n$/.exec(first.stderr)?.[1];
      expect(cursor).toBeDefined();

      const second = await runGpuai(['jobs', 'list', '--limit', '2', '--cursor', cursor ?? ''], { env });
      expect(
        second.stdout
          .trim()
          .split('\n')
          .slice(1)
          .map((row) => row.split(' ')[0]),
      ).toEqual([ids[0]]);
      expect(second.stderr).toBe('');

      const before = fresh.proxy.requests.length;
      const all = await runGpuai(['jobs', 'list', '--all', '--limit', '1', '--json'], { env });
      expect(JSON.parse(all.stdout).jobs.map((job: { id: string }) => job.id)).toEqual([...ids].reverse());
      // One request per page: the last page comes without a cursor.
      expect(fresh.proxy.requests.slice(before).filter((r) => r.path.startsWith('/v1/jobs?'))).toHaveLength(3);
    } finally {
      await fresh.stop();
    }
  });

  it("shows each job's priority, and says when a job is a gang", async () => {
    const fresh = await startTestControlPlane();
    try {
      const gang = await fresh.jobIn('queued', { tasks: 2, gang: true, priority: 9 });
      const plain = await fresh.jobIn('queued');
      const run = await runGpuai(['jobs', 'list'], { env: fresh.env });
      expect(run.code).toBe(0);
      const rows = run.stdout.trim().split('\n');
      expect(rows.find((row) => row.startsWith(gang.id))).toMatch(/ queued +gang 0\/2 +9 /);
      expect(rows.find((row) => row.startsWith(plain.id))).toMatch(/ queued +0\/1 +5 /);
    } finally {
      await fresh.stop();
    }
  });

  it("lists another tenant's jobs with --tenant and an admin key, and refuses it to that tenant's own key", async () => {
    const { key: acme } = await cp.api<{ key: string }>('/v1/keys', {
      method: 'POST',
      body: JSON.stringify({ tenant: 'acme', scopes: ['submit', 'read'] }),
    });
    const submit = async (name: string) => {
      const submitted = await fetch(`${cp.url}/v1/jobs`, {
        method: 'POST',
        headers: { authorization: `Bearer ${acme}`, 'content-type': 'application/json' },
        // In a region no test node serves, so it stays queued and no other test's node takes it.
        body: JSON.stringify({ command: ['true'], name, regions: ['us-east'] }),
      });
      expect(submitted.status).toBe(201);
      return (await submitted.json()) as JobWithTasks;
    };
    const older = await submit('acme-old');
    const job = await submit('acme-job');

    const mine = await gpuai(['jobs', 'list', '--all', '--json']);
    expect((JSON.parse(mine.stdout) as JobList).jobs.map((j) => j.id)).not.toContain(job.id);
    const theirs = await gpuai(['jobs', 'list', '--tenant', 'acme', '--limit', '1']);
    expect(theirs.code).toBe(0);
    expect(cp.proxy.requests.at(-1)?.path).toBe('/v1/jobs?tenant=acme&limit=1');
    expect(theirs.stdout).toMatch(new RegExp(`^${job.id} +acme-job +queued `, 'm'));
    // The hint for the next page keeps the tenant, whose list the cursor belongs to.
    const cursor = /^more: gpuai jobs list --tenant acme --cursor (\S+) \(or --all\)\n$/.exec(theirs.stderr)?.[1];
    expect(cursor, theirs.stderr).toBeDefined();
    const next = await gpuai(['jobs', 'list', '--tenant', 'acme', '--limit', '1', '--cursor', cursor ?? '']);
    expect(next.stdout).toMatch(new RegExp(`^${older.id} +acme-old +queued `, 'm'));

    const refused = await gpuai(['jobs', 'list', '--tenant', 'default'], { env: { GPUAI_API_KEY: acme } });
    expect(refused.code).not.toBe(0);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain('HTTP 403 insufficient_scope');
  });

  it('filters by status, and refuses unknown statuses and limits', async () => {
    const failed = await cp.jobIn('failed');
    const run = await gpuai(['jobs', 'list', '--status', 'failed', '--json']);
    expect(cp.proxy.requests.at(-1)?.path).toBe('/v1/jobs?status=failed');
    const listed = (JSON.parse(run.stdout) as JobList).jobs;
    expect(listed.map((job) => job.id)).toContain(failed.id);
    expect(new Set(listed.map((job) => job.status))).toEqual(new Set(['failed']));
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
  const wait = (id: string, more: string[] = [], options: TestRunOptions = {}) =>
    gpuai(['jobs', 'wait', id, '--interval', '100ms', ...more], options);
  const to = (job: JobWithTasks, status: JobStatus) => () => cp.advance(job, status);

  it('polls until the job succeeds, exits 0, prints progress lines only on change', async () => {
    // Queued where a test node can take it; nothing else is queued there while it waits.
    const job = await cp.jobIn('queued', { tasks: 2, regions: ['eu-west'] });
    const run = await wait(job.id, [], { io: stepping(() => undefined, to(job, 'running'), to(job, 'succeeded')) });
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
    const failing = await cp.jobIn('running', { retries: 0 });
    const failed = await wait(failing.id, [], { io: stepping(to(failing, 'failed')) });
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/^status +failed$/m);
    const cancelled = await cp.jobIn('cancelled');
    const run = await wait(cancelled.id, ['--json']);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout).status).toBe('cancelled');
  });

  it('exits 124 when its own timeout passes first', async () => {
    const job = await cp.jobIn('running');
    const run = await wait(job.id, ['--timeout', '300ms']);
    expect(run.code).toBe(124);
    expect(run.stdout).toBe('');
    expect(run.stderr).toContain(`error: gave up after 300ms: job ${job.id} is still running (1 running)`);
  });

  it('rides out a refused connection, a 503 and a proxy error page, saying so on stderr', async () => {
    const job = await cp.jobIn('running');
    const run = await wait(job.id, [], {
      io: stepping(
        () => cp.proxy.cut(),
        () => {
          cp.proxy.restore();
          cp.proxy.failNext(1, 503);
          cp.proxy.failNext(1, 502, '<html>Bad Gateway</html>');
        },
        () => undefined,
        to(job, 'succeeded'),
      ),
    });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/lost the control plane at http:\/\/127\.0\.0\.1:\d+ \(.+\); retrying in 1s/);
    expect(run.stderr).toContain('fault proxy answered 503; retrying in 2s');
    expect(run.stderr).toContain('HTTP 502 <html>Bad Gateway</html>; retrying in 4s');
    expect(run.stderr).toContain('reconnected to the control plane');
    expect(run.stdout).toMatch(/^status +succeeded$/m);
  });

  it('rides out an outage that is already on at its first poll (refused, then 503), as its help says', async () => {
    const job = await cp.jobIn('running');
    cp.proxy.cut();
    try {
      const run = await wait(job.id, [], {
        io: stepping(
          () => {
            cp.proxy.restore();
            cp.proxy.failNext(1, 503);
          },
          () => undefined,
          to(job, 'succeeded'),
        ),
      });
      expect(run.code).toBe(0);
      expect(run.stderr).toMatch(/lost the control plane at http:\/\/127\.0\.0\.1:\d+ \(.+\); retrying in 1s/);
      expect(run.stderr).toContain('fault proxy answered 503; retrying in 2s');
      expect(run.stderr).toContain('reconnected to the control plane');
      expect(run.stdout).toMatch(/^status +succeeded$/m);
    } finally {
      cp.proxy.restore();
    }
  });

  it('rides out a control plane that is down at its first poll and comes back', async () => {
    const job = await cp.jobIn('running');
    await cp.stopServer();
    let down = true;
    const startServer = async () => {
      await cp.startServer();
      down = false;
    };
    try {
      const run = await wait(job.id, [], { io: stepping(startServer, to(job, 'succeeded')) });
      expect(run.code).toBe(0);
      expect(run.stderr).toContain('reconnected to the control plane');
      expect(run.stdout).toMatch(/^status +succeeded$/m);
    } finally {
      if (down) await startServer(); // the later tests need it
    }
  });

  it('rides out an answer that is not the API once the job has been seen, as a proxy hiccup', async () => {
    const job = await cp.jobIn('running');
    const run = await wait(job.id, [], {
      io: stepping(
        () => cp.proxy.garbleNext(1),
        () => undefined,
        to(job, 'succeeded'),
      ),
    });
    expect(run.code).toBe(0);
    expect(run.stderr).toContain('the control plane sent a response this CLI does not understand');
    expect(run.stderr).toContain('reconnected to the control plane');
    expect(run.stdout).toMatch(/^status +succeeded$/m);
  });

  it('rides out a restart of the control plane, and sees the job finish on the restarted one', async () => {
    const job = await cp.jobIn('running');
    const run = await wait(job.id, [], {
      io: stepping(
        () => cp.stopServer(),
        () => cp.startServer(),
        to(job, 'succeeded'),
      ),
    });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(/lost the control plane at http:\/\/127\.0\.0\.1:\d+ \(.+\); retrying in 1s/);
    expect(run.stderr).toContain('reconnected to the control plane');
    expect(run.stdout).toMatch(/^status +succeeded$/m);
  });

  it('draws one updating line on a terminal and clears it before the result', async () => {
    const job = await cp.jobIn('running');
    const run = await wait(job.id, [], { tty: true, io: stepping(to(job, 'succeeded')) });
    expect(run.code).toBe(0);
    expect(run.stderr).toMatch(new RegExp(`^${job.id} running: 1 running \\(\\d+s\\)`));
    expect(run.stderr).toContain(`\r\u001b[2K${job.id} succeeded: 1 verified`);
    expect(run.stderr.endsWith('\r\u001b[2K')).toBe(true);
    expect(run.stderr).not.toContain('\n');
  });

  it('fails at once for an unknown job (exit 4)', async () => {
    const run = await wait(missingJobId);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('job_not_found');
  });
});

describe('reachability and bad answers', () => {
  it('names the URL when nothing answers (exit 3), in both output modes', async () => {
    const gone = await startFaultProxy(cp.directUrl);
    await gone.close();
    const human = await runGpuai(['jobs', 'list'], { env: { ...cp.env, GPUAI_API: gone.url } });
    expect(human.code).toBe(3);
    expect(human.stderr).toContain(
      `cannot reach the control plane at ${gone.url}: is \`npm start\` running? (ECONNREFUSED`,
    );
    const json = await runGpuai(['jobs', 'list', '--json', '--api', gone.url], { env: cp.env });
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stderr).error.code).toBe('unreachable');
  });

  it('exits 3 when the network to a running control plane is cut', async () => {
    cp.proxy.cut();
    try {
      const run = await gpuai(['jobs', 'list']);
      expect(run.code).toBe(3);
      expect(run.stderr).toContain(`cannot reach the control plane at ${cp.url}`);
    } finally {
      cp.proxy.restore();
    }
  });

  it('refuses an answer that is not the API (exit 4), naming the route', async () => {
    cp.proxy.garbleNext(1);
    const run = await gpuai(['jobs', 'list']);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain(
      'GET /v1/jobs: the control plane sent a response this CLI does not understand (not JSON: <html>502 Bad Gateway</html> {"not":)',
    );
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
    const job = await cp.jobIn('succeeded');
    const tty = await gpuai(['jobs', 'get', job.id], { tty: true });
    expect(tty.stdout).toContain('\u001b[32msucceeded\u001b[39m');
    const noColor = await gpuai(['jobs', 'get', job.id], { tty: true, env: { NO_COLOR: '1' } });
    expect(noColor.stdout).not.toContain('\u001b[');
    const piped = await gpuai(['jobs', 'get', job.id]);
    expect(piped.stdout).not.toContain('\u001b[');
  });
});
