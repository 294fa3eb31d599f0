import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type JobSpecInput, type JobWithTasks, resultHash, sha256Hex } from '../../protocol/index.js';
import { Api, nodeIdOf, type Proc, startAgent, tempDir, waitFor } from '../support/processes.js';
import { deployToEmulators } from './deployment.js';
import { lambdaContext, type Meter, startApiGateway, startEventSource } from './harness.js';

/**
 * The cloud deployment's full job lifecycle, driven through the real Lambda handlers: the api
 * handler behind a local API Gateway (real HTTP from real agent processes, one API Gateway v2
 * event per request), the scheduler and verifier handlers fed SQS events built from messages
 * actually received from the emulator's queues, and the reaper on a timer, all against DynamoDB,
 * SQS and KMS on the emulators. One agent is SIGKILLed mid-task.
 */

const line = 'echo "job $GPUAI_JOB_ID task $GPUAI_TASK_INDEX of $GPUAI_TASK_COUNT"';
const hashOf = (stdout: string) =>
  resultHash([{ name: 'stdout', sha256: sha256Hex(stdout), bytes: Buffer.byteLength(stdout) }]);

/** Defines the suite for one dispatch mode; each mode runs in its own test file (its own Lambda cold start). */
export function cloudLifecycleSuite(dispatch: 'long-poll' | 'sqs'): void {
  const dirs = [tempDir(`cloud-${dispatch}-a0`), tempDir(`cloud-${dispatch}-a1`), tempDir(`cloud-${dispatch}-a2`)];
  const stops: (() => Promise<unknown>)[] = [];
  let agents: Proc[] = [];
  let api: Api;
  let meter: Meter;

  beforeAll(async () => {
    // Rate limits are not what this suite tests (test/security does). Behind the emulated gateway
    // every request comes from 127.0.0.1, and three agents on fast timings plus this test send more
    // than one address may (1200 a minute); the test's one key submits and polls for both tests,
    // past the per-key limit (600 a minute). Both are off here; the per-node limit stays.
    const deployment = await deployToEmulators({
      leaseMs: 3000,
      heartbeatMs: 500,
      recheckMs: 250,
      dispatch,
      rateLimits: 'address=0/60,key=0/60',
    });
    meter = deployment.meter;
    stops.push(deployment.close);
    const { handler: apiHandler } = await import('../../functions/handlers/api.js');
    const { handler: scheduler } = await import('../../functions/handlers/scheduler.js');
    const { handler: verifier } = await import('../../functions/handlers/verifier.js');
    const { handler: reaper } = await import('../../functions/handlers/reaper.js');

    const gateway = await startApiGateway(apiHandler, meter);
    stops.push(gateway.close);
    for (const [queue, handler] of [
      ['schedule', scheduler],
      ['verify', verifier],
    ] as const) {
      const source = startEventSource(deployment.sqs, deployment.queueUrls[queue] as string, queue, handler, meter);
      stops.push(source.stop);
    }
    // One tick at a time, as a schedule far slower than the ticks would give: on a loaded machine a
    // tick can outlast the interval, and overlapping ticks pile requests onto the emulators.
    let ticking = false;
    const tick = setInterval(() => {
      if (ticking) return;
      ticking = true;
      const started = performance.now();
      reaper(
        {
          version: '0',
          id: 'tick',
          'detail-type': 'Scheduled Event',
          source: 'aws.events',
          account: '0',
          time: new Date().toISOString(),
          region: 'us-east-1',
          resources: [],
          detail: {},
        },
        lambdaContext('reaper'),
      )
        .then(
          () => meter.add('reaper', performance.now() - started),
          () => undefined,
        )
        .finally(() => {
          ticking = false;
        });
    }, 500);
    stops.push(async () => clearInterval(tick));

    // The operator's first key, written straight into the table as a bootstrap script would (in AWS
    // the first admin can also be an OIDC token with the gpuai:admin scope; docs/deploy.md).
    const { controlPlane } = await import('../../functions/handlers/config.js');
    const { key } = await controlPlane().apiKeys.create({ tenant: 'cloud-e2e', scopes: ['submit', 'read'] });
    api = new Api(gateway.url, key);
    agents = dirs.map((d, i) => startAgent(api.url, d.path, `cloud-${i}`));
    await waitFor('three live nodes', async () => ((await api.liveNodes()) === 3 ? true : undefined), 60_000);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(agents.map((a) => a.kill('SIGKILL')));
    for (const stop of stops.reverse()) await stop();
    for (const d of dirs) d.remove();
  });

  describe(`cloud deployment through the Lambda handlers (dispatch: ${dispatch})`, () => {
    it('runs every task exactly once, also when an agent is killed mid-task', async () => {
      const specs: JobSpecInput[] = [
        { name: 'slow', command: ['sh', '-c', `sleep 4; ${line}`] },
        ...Array.from({ length: 11 }, (_, i) => ({
          name: `quick-${i}`,
          command: ['sh', '-c', `sleep 0.1; ${line}`],
          tasks: 1 + (i % 3),
        })),
      ];
      const slow = await api.submit(specs[0] as JobSpecInput, 'cloud-0');
      // The quick jobs are submitted while the slow task runs and its agent is killed: submitting
      // them all can take longer than the slow task does, so the kill does not wait for them.
      const rest = (async () => {
        const quick: JobWithTasks[] = [];
        for (const [i, spec] of specs.entries()) if (i > 0) quick.push(await api.submit(spec, `cloud-${i}`));
        return quick;
      })();

      const victim = await waitFor('the slow task to run', async () => {
        const task = (await api.job(slow.id)).tasks[0];
        return task?.state === 'running' ? task.nodeId : undefined;
      });
      const victimIndex = dirs.findIndex((d) => nodeIdOf(d.path) === victim);
      await agents[victimIndex]?.kill('SIGKILL');
      const submitted = [slow, ...(await rest)];

      const finished = await api.finished(submitted, 120_000);
      expect(finished.map((j) => j.status)).toEqual(submitted.map(() => 'succeeded'));
      for (const job of finished) {
        for (const task of job.tasks) {
          expect(task.attempts.filter((a) => a.outcome === 'completed')).toHaveLength(1);
          expect(task.result?.resultHash).toBe(hashOf(`job ${job.id} task ${task.index} of ${job.tasks.length}\n`));
        }
      }
      const lost = (finished[0] as JobWithTasks).tasks[0];
      expect(lost?.attempts.map((a) => [a.nodeId === victim, a.outcome])).toEqual([
        [true, 'lease-expired'],
        [false, 'completed'],
      ]);
    }, 180_000);

    it('measures AWS requests and Lambda time per task and per idle node (for docs/cost-model.md)', async () => {
      const live = 2; // the third agent was killed above
      meter.reset();
      const idleSeconds = 10;
      await new Promise((r) => setTimeout(r, idleSeconds * 1000));
      const idle = snapshot(meter);
      meter.reset();
      const tasks = 20;
      const jobs: JobWithTasks[] = [];
      for (let i = 0; i < tasks; i++)
        jobs.push(await api.submit({ name: `m-${i}`, command: ['true'] }, `measure-${i}`));
      // One listing per probe, not one request per job.
      const measured = await api.finished(jobs, 120_000);
      expect(measured.map((j) => j.status)).toEqual(jobs.map(() => 'succeeded'));
      const busy = snapshot(meter);
      const perIdleNodeHour = (n: number) => Math.round((n / live / idleSeconds) * 3600);
      console.log(
        JSON.stringify(
          {
            idle: {
              seconds: idleSeconds,
              nodes: live,
              requestsPerNodeHour: mapValues(idle.requests, perIdleNodeHour),
              lambdaMsPerNodeHour: mapValues(idle.ms, perIdleNodeHour),
            },
            perTask: {
              tasks,
              requests: mapValues(busy.requests, (n) => +(n / tasks).toFixed(1)),
              lambdaMs: mapValues(busy.ms, (n) => +(n / tasks).toFixed(1)),
            },
          },
          null,
          2,
        ),
      );
      // Behaviour, not speed: an idle fleet still heartbeats and polls, and each task costs DynamoDB writes.
      expect(idle.requests['DynamoDB.Query'] ?? 0).toBeGreaterThan(0);
      expect(busy.requests['DynamoDB.TransactWriteItems'] ?? busy.requests['DynamoDB.PutItem'] ?? 0).toBeGreaterThan(0);
    }, 180_000);
  });
}

function snapshot(m: Meter) {
  return {
    requests: Object.fromEntries([...m.requests].sort(([a], [b]) => a.localeCompare(b))),
    ms: Object.fromEntries([...m.invocations].map(([k, v]) => [k, Math.round(v.ms)])),
  };
}

function mapValues(o: Record<string, number>, f: (n: number) => number): Record<string, number> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
}
