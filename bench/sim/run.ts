import { fork } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { fleetSummary, generateFleet } from '../shared/fleet.js';
import type { Estimates } from './learner.js';
import { type PolicyName, policyNames } from './policies.js';
import { type PolicyResult, type SimOptions, simulate } from './simulate.js';
import { generateWorkload } from './workload.js';

/**
 * `npm run bench:sim`: the scheduling simulator (bench/sim/simulate.ts) over one seeded fleet and
 * workload, once per placement policy, each policy in its own process (two at a time on two
 * cores), printing a table and, last, one line of JSON.
 */
const help = `Usage: npm run bench:sim -- [options]

Discrete-event simulation of the scheduler on the real domain (placement index and policies,
task machine) and the real embedded store (SqliteStore, in-memory SQLite), one run per policy.

  --quick              CI size: 1,000 nodes, 5,000 tasks
  --nodes <n>          fleet size (default 100000)
  --tasks <n>          tasks submitted (default 1000000)
  --seed <n>           seed of fleet, workload and failures (default 1)
  --policies <list>    comma-separated among ${policyNames.join(', ')} (default all)
  --load <x>           offered GPU load, 0..1 (default 0.8)
  --tick-ms <ms>       dispatch cycle (default 250)
  --jobs <n>           policies run at once, one process each (default min(2, cores))
  --full-scan-limit <n> run fullScan only when nodes x tasks <= n (default 5e9; it scores every
                       node for every decision, so at 100k nodes x 1M tasks it would run for hours)
  --estimates <kind>   production (OnlinePerformance, default) or ewma (the simulator's stand-in)
  --help               this text

A run of 100,000 tasks or more tells on stderr how far each policy got, every tenth of its tasks.

Last line: {"nodes":..,"tasks":..,"policies":{"ours":{"lost":0,"failedPct":..,"p99QueueMs":..,
"utilisationPct":..},"bestFit":{...},...},...}`;

interface Args {
  nodes: number;
  tasks: number;
  seed: number;
  policies: PolicyName[];
  load: number;
  tickMs: number;
  jobs: number;
  fullScanLimit: number;
  quick: boolean;
  estimates: Estimates;
  child?: PolicyName;
}

function parseArgs(argv: readonly string[]): Args {
  const args: Args = {
    nodes: 100_000,
    tasks: 1_000_000,
    seed: 1,
    policies: [...policyNames],
    load: 0.8,
    tickMs: 250,
    jobs: Math.min(2, availableParallelism()),
    fullScanLimit: 5e9,
    quick: false,
    estimates: 'production',
  };
  const number = (flag: string, text: string | undefined): number => {
    const value = Number(text);
    if (text === undefined || !Number.isFinite(value) || value < 0) {
      console.error(`${flag} needs a non-negative number, got ${text ?? 'nothing'}`);
      process.exit(2);
    }
    return value;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i] as string;
    const value = argv[i + 1];
    switch (flag) {
      case '--help':
      case '-h':
        console.log(help);
        process.exit(0);
        break;
      case '--quick':
        args.quick = true;
        args.nodes = 1_000;
        args.tasks = 5_000;
        break;
      case '--nodes':
        args.nodes = Math.floor(number(flag, value));
        i++;
        break;
      case '--tasks':
        args.tasks = Math.floor(number(flag, value));
        i++;
        break;
      case '--seed':
        args.seed = Math.floor(number(flag, value));
        i++;
        break;
      case '--load':
        args.load = number(flag, value);
        i++;
        break;
      case '--tick-ms':
        args.tickMs = Math.max(1, number(flag, value));
        i++;
        break;
      case '--jobs':
        args.jobs = Math.max(1, Math.floor(number(flag, value)));
        i++;
        break;
      case '--full-scan-limit':
        args.fullScanLimit = number(flag, value);
        i++;
        break;
      case '--policies': {
        const names = (value ?? '').split(',').filter((p) => p !== '');
        const unknown = names.filter((p) => !policyNames.includes(p as PolicyName));
        if (names.length === 0 || unknown.length > 0) {
          console.error(
            `--policies takes some of ${policyNames.join(', ')}; unknown: ${unknown.join(', ') || '(none given)'}`,
          );
          process.exit(2);
        }
        args.policies = names as PolicyName[];
        i++;
        break;
      }
      case '--estimates':
        if (value !== 'production' && value !== 'ewma') {
          console.error(`--estimates takes production or ewma, got ${value ?? 'nothing'}`);
          process.exit(2);
        }
        args.estimates = value;
        i++;
        break;
      case '--child':
        args.child = value as PolicyName;
        i++;
        break;
      default:
        console.error(`unknown option ${flag} (see --help)`);
        process.exit(2);
    }
  }
  return args;
}

export interface SimulationOptions extends SimOptions {
  nodes: number;
  tasks: number;
  load?: number;
}

/** One policy's run, from the seed alone: what a child process (or a test) calls. */
export async function runPolicy(policy: PolicyName, options: SimulationOptions): Promise<PolicyResult> {
  const fleet = generateFleet({ nodes: options.nodes, seed: options.seed });
  const work = generateWorkload(fleet, { tasks: options.tasks, seed: options.seed, load: options.load ?? 0.8 });
  return simulate(policy, fleet, work, options);
}

function runChild(policy: PolicyName, argv: readonly string[]): Promise<PolicyResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(import.meta.url), [...argv, '--child', policy], {
      execArgv: process.execArgv,
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    let result: PolicyResult | undefined;
    child.on('message', (message) => {
      result = message as PolicyResult;
    });
    child.on('error', reject);
    child.on('exit', (code) => {
      if (result !== undefined) resolve(result);
      else reject(new Error(`policy ${policy} exited with code ${code} and no result`));
    });
  });
}

const round = (x: number, digits = 3): number => Math.round(x * 10 ** digits) / 10 ** digits;

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const args = parseArgs(argv);
  const options: SimulationOptions = {
    nodes: args.nodes,
    tasks: args.tasks,
    seed: args.seed,
    load: args.load,
    tickMs: args.tickMs,
    estimates: args.estimates,
  };
  if (args.child !== undefined) {
    const policy = args.child;
    // A long run says how far it got, on stderr, every tenth of its tasks.
    const progress = (ended: number, hours: number, cpuMs: number) =>
      console.error(
        `  ${policy} ${ended}/${args.tasks} tasks ended, ${hours.toFixed(1)} sim h, cpu ${(cpuMs / 1000).toFixed(0)} s`,
      );
    const result = await runPolicy(policy, args.tasks >= 100_000 ? { ...options, progress } : options);
    process.send?.(result);
    return;
  }

  const began = performance.now();
  const fleet = generateFleet({ nodes: args.nodes, seed: args.seed });
  const summary = fleetSummary(fleet);
  const work = generateWorkload(fleet, { tasks: args.tasks, seed: args.seed, load: args.load });
  console.log(
    `bench:sim  seed ${args.seed}  ${args.nodes} nodes (${summary.gpus} GPUs, ${Object.keys(summary.classes).length} classes)  ` +
      `${args.tasks} tasks (${work.shapes.length} shapes, ${Math.round(work.traceShare * 100)}% Alibaba trace, ${round(work.arrivalsPerSec, 1)}/s, load ${args.load})`,
  );
  const skipped = new Map<PolicyName, string>();
  const runs = args.policies.filter((p) => {
    if (p === 'fullScan' && args.nodes * args.tasks > args.fullScanLimit) {
      skipped.set(p, `nodes x tasks ${args.nodes * args.tasks} above --full-scan-limit ${args.fullScanLimit}`);
      return false;
    }
    return true;
  });
  const results = new Map<PolicyName, PolicyResult>();
  const queue = [...runs];
  const worker = async () => {
    for (let p = queue.shift(); p !== undefined; p = queue.shift()) {
      const r = await runChild(p, argv);
      results.set(p, r);
      console.log(
        `  ${p.padEnd(10)} ${(r.wallMs / 1000).toFixed(1).padStart(6)} s  lost ${r.lost}  failed ${round(r.failedPct)}%  ` +
          `queue p50 ${r.p50QueueMs} ms p99 ${r.p99QueueMs} ms (wait p99 ${r.p99WaitMs} ms, ${r.longWaits} > 10 s)  JCT p50 ${r.p50JctMs} p99 ${r.p99JctMs} ms  ` +
          `util ${r.utilisationPct}%  attempts ${r.attempts}  crashes ${r.crashes}  departures ${r.departures}  ` +
          `writes ${r.storeWrites} in ${r.transactions} tx  decision ${r.decisionUs} µs  cpu ${(r.cpuMs / 1000).toFixed(1)} s  sim ${r.simHours} h`,
      );
    }
  };
  await Promise.all(Array.from({ length: Math.min(args.jobs, runs.length) }, worker));
  for (const [p, why] of skipped) console.log(`  ${p.padEnd(10)} skipped: ${why}`);

  const policies: Record<string, unknown> = {};
  for (const p of args.policies) {
    const r = results.get(p);
    if (r === undefined) {
      policies[p] = { skipped: skipped.get(p) ?? 'not run' };
      continue;
    }
    policies[p] = {
      lost: r.lost,
      failedPct: round(r.failedPct, 4),
      p50QueueMs: r.p50QueueMs,
      p99QueueMs: r.p99QueueMs,
      p99WaitMs: r.p99WaitMs,
      longWaits: r.longWaits,
      p50JctMs: r.p50JctMs,
      p99JctMs: r.p99JctMs,
      utilisationPct: r.utilisationPct,
      attempts: r.attempts,
      crashes: r.crashes,
      departures: r.departures,
      decisionUs: r.decisionUs,
      storeWrites: r.storeWrites,
      wallS: round(r.wallMs / 1000, 1),
      cpuS: round(r.cpuMs / 1000, 1),
    };
  }
  const ours = results.get('ours');
  const baselines = [...results.values()].filter((r) => r.policy !== 'ours');
  const best = baselines.sort((a, b) => a.p99QueueMs - b.p99QueueMs)[0];
  const line: Record<string, unknown> = {
    nodes: args.nodes,
    tasks: args.tasks,
    seed: args.seed,
    load: args.load,
    policies,
    ...(ours !== undefined && best !== undefined
      ? {
          bestBaseline: best.policy,
          p99QueueVsBestBaselinePct:
            best.p99QueueMs === 0 ? 0 : round((100 * (ours.p99QueueMs - best.p99QueueMs)) / best.p99QueueMs, 1),
        }
      : {}),
    estimates: ours?.perf ?? baselines[0]?.perf,
    wallS: round((performance.now() - began) / 1000, 1),
  };
  console.log(JSON.stringify(line));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
