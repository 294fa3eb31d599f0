/**
 * bench:dispatch — tasks per second and submit-to-running latency through real HTTP on the
 * embedded control plane, with many simulated signed agents, beside a bare hono route's request
 * rate measured in the same run on the same server stack.
 *
 *   npm run bench:dispatch -- [--quick] [--agents N] [--tasks N] [--rate N] [--profile DIR]
 *
 * Two server processes (bench/dispatch/server.ts), the bare route's and the control plane's, so
 * that each one's CPU time is its own; agents and submitter in this one. Phases:
 * 1. bare: as many concurrent clients as agents GET the bare route for a few seconds (requests/s,
 *    and the bare server's CPU time per request);
 * 2. throughput: N single-task jobs are submitted (8 at a time) while the agents drain them
 *    (tasks/s, every request of the phase per task, the server's CPU per task and per request, and
 *    its store and queue calls per task: counts that a loaded machine does not blur, unlike timings);
 *    then the bare route once more, so that its figures bracket the control plane's in time;
 * 3. latency: single-task jobs submitted at a steady rate the idle agents keep up with; the time
 *    from sending the submit to the agent's first progress report being acknowledged (running),
 *    p50/p99. Agents long-poll, so no poll interval is in it.
 * Last line: one JSON object (see `summary` below). `fractionOfHttpLimit` is tasks/s x requests per
 * task over the bare route's requests/s, by the wall clock: on a shared machine it measures the
 * load as much as the server, and the bare route's rate is often bound by this process's clients.
 * `cpuFractionOfHttpLimit` is the same fraction by CPU time: the bare server's CPU µs per request
 * over the control plane's CPU µs per dispatch request (process.cpuUsage, every thread, the
 * control plane's background work included), the rate ratio two CPU-bound servers would reach.
 * CPU time rather than event-loop utilisation: ELU counts the time the loop was busy by the wall
 * clock, so a descheduled process looks busier on a loaded machine.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { ParentMessage, ServerMessage, StoreCounts } from './server.js';
import { SimAgent, type TaskTimes } from './sim-agent.js';
import { percentile, round } from './stats.js';

const help = `npm run bench:dispatch -- [options]

The real embedded control plane on real HTTP with many simulated signed agents (the real agent
client, edge-agent/client.ts): tasks/s, requests per task, submit-to-running p50/p99, beside a bare
hono route's request rate on the same server stack. Last line: one JSON object.

  --quick             CI-sized run (16 agents, 200 tasks, 3 s latency phase)
  --agents N          simulated agents, one slot each (default 64)
  --tasks N           tasks in the throughput phase (default 3000)
  --rate N            jobs/s in the latency phase (default 20)
  --latency-seconds N length of the latency phase (default 10)
  --bare-seconds N    length of the bare-route phase (default 5)
  --count-limits      the per-node and per-key rate limits count every request (at a limit
                      never reached), as they do by default in a deployment; off otherwise
  --profile DIR       write the server's CPU profile of the throughput phase into DIR
                      (a .cpuprofile: Chrome DevTools or speedscope open it)
  --help              this text
`;

interface Options {
  agents: number;
  tasks: number;
  rate: number;
  latencySeconds: number;
  bareSeconds: number;
  profile: string | undefined;
  countLimits: boolean;
  quick: boolean;
}

function options(): Options {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
      agents: { type: 'string' },
      tasks: { type: 'string' },
      rate: { type: 'string' },
      'latency-seconds': { type: 'string' },
      'bare-seconds': { type: 'string' },
      profile: { type: 'string' },
      'count-limits': { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    process.stdout.write(help);
    process.exit(0);
  }
  const quick = values.quick;
  const int = (name: string, raw: string | undefined, fallback: number) => {
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${raw}`);
    return n;
  };
  return {
    quick,
    agents: int('agents', values.agents, quick ? 16 : 64),
    tasks: int('tasks', values.tasks, quick ? 200 : 3000),
    rate: int('rate', values.rate, 20),
    latencySeconds: int('latency-seconds', values['latency-seconds'], quick ? 3 : 10),
    bareSeconds: int('bare-seconds', values['bare-seconds'], quick ? 2 : 5),
    profile: values.profile,
    countLimits: values['count-limits'],
  };
}

/** The server child, over IPC. */
class Server {
  private waiters: ((message: ServerMessage) => void)[] = [];
  private constructor(private readonly child: ChildProcess) {
    child.on('message', (message: ServerMessage) => {
      for (const waiter of this.waiters.splice(0)) waiter(message);
    });
  }

  static async start(
    role: 'bare' | 'control-plane',
    countLimits: boolean,
  ): Promise<{ server: Server; ready: Extract<ServerMessage, { ready: true }> }> {
    const child = fork(fileURLToPath(new URL('./server.ts', import.meta.url)), [], {
      execArgv: ['--import', 'tsx'],
      stdio: 'inherit',
      env: { ...process.env, BENCH_ROLE: role, BENCH_COUNT_LIMITS: countLimits ? '1' : '0' },
    });
    const server = new Server(child);
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code) => reject(new Error(`the bench server exited with ${code}`))),
    );
    const ready = await Promise.race([
      server.next((m): m is Extract<ServerMessage, { ready: true }> => 'ready' in m),
      exited,
    ]);
    return { server, ready };
  }

  private next<T extends ServerMessage>(match: (m: ServerMessage) => m is T): Promise<T> {
    return new Promise((resolve) => {
      const wait = (message: ServerMessage) => {
        if (match(message)) resolve(message);
        else this.waiters.push(wait);
      };
      this.waiters.push(wait);
    });
  }

  private send(message: ParentMessage): void {
    this.child.send(message);
  }

  /** The server process's CPU time so far, ms. */
  async cpuMs(): Promise<number> {
    return (await this.stats()).cpuMs;
  }

  /** The server process's CPU time (ms) and store and queue calls so far. */
  async stats(): Promise<{ cpuMs: number; store: StoreCounts }> {
    const reply = this.next((m): m is Extract<ServerMessage, { cpu: unknown }> => 'cpu' in m);
    this.send({ cmd: 'cpu' });
    const { cpu, store } = await reply;
    return { cpuMs: (cpu.user + cpu.system) / 1000, store };
  }

  startProfile(): void {
    this.send({ cmd: 'profile' });
  }

  async stopProfile(file: string): Promise<void> {
    const written = this.next((m): m is Extract<ServerMessage, { profiled: string }> => 'profiled' in m);
    this.send({ cmd: 'profiled', file });
    await written;
  }

  async stop(): Promise<void> {
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.send({ cmd: 'stop' });
    await exited;
  }
}

/** Counts every request this process sends, by what it is (the agents' client uses global fetch). */
class RequestCounter {
  readonly byKind = new Map<string, number>();
  total = 0;
  emptyPolls = 0;

  install(): void {
    const original = globalThis.fetch;
    globalThis.fetch = async (input, init) => {
      const url = new URL(input instanceof Request ? input.url : String(input));
      const kind = requestKind(init?.method ?? 'GET', url.pathname);
      this.total++;
      this.byKind.set(kind, (this.byKind.get(kind) ?? 0) + 1);
      const response = await original(input, init);
      if (kind === 'poll' && response.status === 204) this.emptyPolls++;
      return response;
    };
  }

  snapshot(): { total: number; byKind: Record<string, number>; emptyPolls: number } {
    return { total: this.total, byKind: Object.fromEntries(this.byKind), emptyPolls: this.emptyPolls };
  }
}

function requestKind(method: string, path: string): string {
  if (path === '/bare') return 'bare';
  if (method === 'POST' && path === '/v1/jobs') return 'submit';
  if (method === 'POST' && path === '/v1/nodes') return 'register';
  const last = path.split('/').at(-1) ?? '';
  if (last === 'work') return 'poll';
  if (['heartbeat', 'progress', 'result', 'fail'].includes(last)) return last;
  return 'other';
}

const minus = (a: Record<string, number>, b: Record<string, number>) =>
  Object.fromEntries(Object.entries(a).flatMap(([k, v]) => (v === (b[k] ?? 0) ? [] : [[k, v - (b[k] ?? 0)]])));

/** Store and queue calls per task between two counts. */
function perTask(after: StoreCounts, before: StoreCounts, tasks: number) {
  const each = (a: number, b: number) => round((a - b) / tasks, 2);
  const writes = Object.fromEntries(
    Object.entries(after.writes)
      .map(([kind, n]) => [kind, each(n, before.writes[kind] ?? 0)] as const)
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1]),
  );
  return {
    get: each(after.get, before.get),
    query: each(after.query, before.query),
    transact: each(after.transact, before.transact),
    itemsWritten: round(
      Object.values(writes).reduce((sum, n) => sum + n, 0),
      2,
    ),
    writes,
    queueSend: each(after.queueSend, before.queueSend),
    queueReceived: each(after.queueReceived, before.queueReceived),
    queueDelete: each(after.queueDelete, before.queueDelete),
  };
}

async function submitJob(url: string, adminKey: string): Promise<string> {
  const response = await fetch(`${url}/v1/jobs`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
    body: JSON.stringify({ command: ['true'] }),
  });
  const text = await response.text();
  if (response.status !== 201 && response.status !== 200) throw new Error(`submit: ${response.status} ${text}`);
  const job = JSON.parse(text) as { tasks: { id: string }[] };
  const id = job.tasks[0]?.id;
  if (id === undefined) throw new Error('submit: the job has no task');
  return id;
}

/** One window of the bare route: its request rate, and the server's and this process's CPU per request. */
interface BareWindow {
  requests: number;
  /** Requests that failed (not counted in `requests`). */
  errors: number;
  seconds: number;
  serverCpuMs: number;
  clientCpuMs: number;
}

async function bareWindow(bare: Server, url: string, clients: number, seconds: number): Promise<BareWindow> {
  const serverBefore = await bare.cpuMs();
  const clientBefore = process.cpuUsage();
  const started = performance.now();
  const until = started + seconds * 1000;
  let requests = 0;
  let errors = 0;
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (performance.now() < until) {
        try {
          const response = await fetch(url);
          await response.text();
          requests++;
        } catch {
          // A keep-alive connection the idle server closed as it was reused: counted, and tried again.
          errors++;
        }
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const client = process.cpuUsage(clientBefore);
  return {
    requests,
    errors,
    seconds: elapsed,
    serverCpuMs: (await bare.cpuMs()) - serverBefore,
    clientCpuMs: (client.user + client.system) / 1000,
  };
}

/** The bare route's figures over its windows together. */
function bareFigures(windows: readonly BareWindow[]) {
  const sum = (f: (w: BareWindow) => number) => windows.reduce((total, w) => total + f(w), 0);
  const requests = sum((w) => w.requests);
  return {
    rps: requests / sum((w) => w.seconds),
    serverCpuUsPerRequest: (sum((w) => w.serverCpuMs) * 1000) / requests,
    clientCpuUsPerRequest: (sum((w) => w.clientCpuMs) * 1000) / requests,
    errors: sum((w) => w.errors),
    byWindow: windows.map((w) => ({
      rps: round(w.requests / w.seconds),
      serverCpuUsPerRequest: round((w.serverCpuMs * 1000) / w.requests),
    })),
  };
}

const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function main(): Promise<void> {
  const o = options();
  const counter = new RequestCounter();
  counter.install();
  // The bare route runs in a process of its own (see server.ts), started first and kept for a
  // second window after the throughput phase, so that its figures bracket the control plane's in time.
  const bare = await Server.start('bare', false);
  const { server, ready } = await Server.start('control-plane', o.countLimits);
  const loadAtStart = loadavg()[0] ?? 0;
  const done = new Map<string, TaskTimes>();
  let onDone: (() => void) | undefined;
  const agents = Array.from(
    { length: o.agents },
    () =>
      new SimAgent(ready.url, 20, (taskId, times) => {
        done.set(taskId, times);
        onDone?.();
      }),
  );
  try {
    for (let i = 0; i < agents.length; i += 16) await Promise.all(agents.slice(i, i + 16).map((a) => a.register()));
    log(`${agents.length} agents registered`);

    // 1. The bare route, as many concurrent clients as agents, after a warm-up (connections opened,
    // code compiled), as the throughput phase gets too.
    await bareWindow(bare.server, bare.ready.url, o.agents, 0.5);
    const bareWindows = [await bareWindow(bare.server, bare.ready.url, o.agents, o.bareSeconds)];
    const firstBare = bareFigures(bareWindows);
    log(
      `bare route: ${round(firstBare.rps)} requests/s with ${o.agents} clients, server CPU ` +
        `${round(firstBare.serverCpuUsPerRequest)} µs/request, client CPU ${round(firstBare.clientCpuUsPerRequest)} µs/request`,
    );

    for (const agent of agents) agent.start();
    // Warm-up: one task per agent, so the measured phase starts with compiled code and open connections.
    await Promise.all(Array.from({ length: o.agents }, () => submitJob(ready.url, ready.adminKey)));
    while (done.size < o.agents) await sleep(20);
    done.clear();

    // 2. Throughput.
    if (o.profile !== undefined) server.startProfile();
    const before = counter.snapshot();
    const { cpuMs: cpuBefore, store: storeBefore } = await server.stats();
    const benchCpuBefore = process.cpuUsage();
    const t0 = performance.now();
    const submitted: string[] = [];
    let next = 0;
    const allDone = new Promise<void>((resolve) => {
      onDone = () => {
        if (done.size >= o.tasks) resolve();
      };
    });
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < o.tasks) {
          next++;
          submitted.push(await submitJob(ready.url, ready.adminKey));
        }
      }),
    );
    const submitSeconds = (performance.now() - t0) / 1000;
    await allDone;
    const seconds = (performance.now() - t0) / 1000;
    const statsAfter = await server.stats();
    const cpuMs = statsAfter.cpuMs - cpuBefore;
    const store = perTask(statsAfter.store, storeBefore, o.tasks);
    // This process's: the simulated agents (signing, parsing) and the submitter.
    const benchCpu = process.cpuUsage(benchCpuBefore);
    const cpuOfBench = (benchCpu.user + benchCpu.system) / 1000;
    const after = counter.snapshot();
    if (o.profile !== undefined) {
      mkdirSync(o.profile, { recursive: true });
      const file = join(o.profile, `dispatch-${Date.now()}.cpuprofile`);
      await server.stopProfile(file);
      log(`server CPU profile of the throughput phase: ${file}`);
    }
    const requests = after.total - before.total;
    const tasksPerSec = o.tasks / seconds;
    const requestsPerTask = requests / o.tasks;
    const byKind = minus(after.byKind, before.byKind);
    log(
      `throughput: ${o.tasks} tasks in ${round(seconds)} s = ${round(tasksPerSec)} tasks/s (submitted at ` +
        `${round(o.tasks / submitSeconds)} jobs/s), ${round(requestsPerTask)} requests/task ${JSON.stringify(byKind)}, ` +
        `server CPU ${round(cpuMs / o.tasks, 3)} ms/task (${round((cpuMs / 1000 / seconds) * 100)}% of a core), ` +
        `store per task ${JSON.stringify(store)}`,
    );

    // The bare route again, now that the agents idle on long polls (which cost the control plane's
    // process, not the bare one's).
    bareWindows.push(await bareWindow(bare.server, bare.ready.url, o.agents, o.bareSeconds));
    const bareFigs = bareFigures(bareWindows);
    const bareRouteRps = bareFigs.rps;
    const bareCpuUsPerRequest = bareFigs.serverCpuUsPerRequest;
    const dispatchCpuUsPerRequest = (cpuMs * 1000) / requests;
    log(
      `bare route, both windows: ${round(bareRouteRps)} requests/s, server CPU ${round(bareCpuUsPerRequest)} µs/request ` +
        `(${JSON.stringify(bareFigs.byWindow)}); control plane ${round(dispatchCpuUsPerRequest)} µs/request`,
    );

    // 3. Latency at a steady rate.
    await sleep(500);
    done.clear();
    onDone = undefined;
    const sentAt = new Map<string, number>();
    const submits: Promise<void>[] = [];
    const total = o.rate * o.latencySeconds;
    const l0 = performance.now();
    for (let i = 0; i < total; i++) {
      const due = l0 + (i * 1000) / o.rate;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const at = performance.now();
      submits.push(
        submitJob(ready.url, ready.adminKey).then((taskId) => {
          sentAt.set(taskId, at);
        }),
      );
    }
    await Promise.all(submits);
    const deadline = performance.now() + 30_000;
    while (done.size < total && performance.now() < deadline) await sleep(20);
    const running: number[] = [];
    const assigned: number[] = [];
    for (const [taskId, at] of sentAt) {
      const times = done.get(taskId);
      if (times === undefined) continue;
      running.push(times.runningAt - at);
      assigned.push(times.assignedAt - at);
    }
    const p50Ms = percentile(running, 50);
    const p99Ms = percentile(running, 99);
    log(
      `latency at ${o.rate} jobs/s: submit-to-running p50 ${round(p50Ms)} ms p99 ${round(p99Ms)} ms ` +
        `(submit-to-assigned p50 ${round(percentile(assigned, 50))} ms p99 ${round(percentile(assigned, 99))} ms), ` +
        `${running.length}/${total} ran`,
    );

    const summary = {
      // Wall clock (the keys): rates over elapsed time, so they depend on what else the
      // machine runs, and the bare route's rate is bounded by this process's clients as much as by
      // the server (see bare.clientCpuUsPerRequest).
      tasksPerSec: round(tasksPerSec),
      requestsPerTask: round(requestsPerTask, 2),
      bareRouteRps: round(bareRouteRps),
      fractionOfHttpLimit: round((tasksPerSec * requestsPerTask) / bareRouteRps, 3),
      p50Ms: round(p50Ms, 2),
      p99Ms: round(p99Ms, 2),
      // CPU time (process.cpuUsage of each server process, every thread): what each request costs
      // the server whatever else runs, so the fraction a server-bound process would reach:
      // bare µs per request over the control plane's µs per dispatch request.
      cpuFractionOfHttpLimit: round(bareCpuUsPerRequest / dispatchCpuUsPerRequest, 3),
      serverCpuUsPerDispatchRequest: round(dispatchCpuUsPerRequest),
      serverCpuUsPerBareRequest: round(bareCpuUsPerRequest),
      serverCpuMsPerTask: round(cpuMs / o.tasks, 3),
      figures: {
        fractionOfHttpLimit: 'wall clock, load-dependent',
        cpuFractionOfHttpLimit: 'server CPU time per request, bare over dispatch',
        p50Ms: 'wall clock, submit to running, load-dependent',
      },
      bare: {
        clients: o.agents,
        clientCpuUsPerRequest: round(bareFigs.clientCpuUsPerRequest),
        errors: bareFigs.errors,
        windows: bareFigs.byWindow,
      },
      agents: o.agents,
      tasks: o.tasks,
      submitJobsPerSec: round(o.tasks / submitSeconds),
      requestsByKind: byKind,
      storePerTask: store,
      submitToAssignedP50Ms: round(percentile(assigned, 50), 2),
      submitToAssignedP99Ms: round(percentile(assigned, 99), 2),
      latencyRate: o.rate,
      countLimits: o.countLimits,
      benchCpuMsPerTask: round(cpuOfBench / o.tasks, 3),
      latencyTasksRan: running.length,
      loadAverage1m: { start: round(loadAtStart, 2), end: round(loadavg()[0] ?? 0, 2) },
      cores: availableParallelism(),
      quick: o.quick,
    };
    await Promise.all(agents.map((a) => a.stop()));
    await server.stop();
    await bare.server.stop();
    process.stdout.write(`${JSON.stringify(summary)}\n`);
  } catch (error) {
    await server.stop().catch(() => undefined);
    await bare.server.stop().catch(() => undefined);
    throw error;
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
