import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { measureSize, type SizeResult } from './measure.js';

const help = `npm run bench:fleet -- [options]

The embedded control plane's cost per request as the fleet grows: heartbeat, poll (a claim),
submit (the request and the routing of its task), job list (50 jobs) and a reaper tick, through the
real HTTP app (signed node requests, API-key application requests) over the real SQLite store, with
100, 1,000, 10,000 and 100,000 registered live nodes and 1,000 to 1,000,000 queued tasks. Measured
per request: CPU µs of the process, store calls and items read at the store port; per size: memory.
Each size runs in a child process of its own (a fresh database, memory measured alone).

  --quick        CI-sized: 100, 1,000 and 10,000 nodes, at most 10,000 tasks, fewer requests
  --sizes LIST   nodes:tasks pairs, e.g. 100:1000,100000:1000000 (default: the ladder above)
  --ops N        requests measured per kind and size (default 400; --quick 150)
  --seed N       fleet seed (default 1)
  --help         this text

Last line: {"costRatio":{"poll":..,"heartbeat":..,"submit":..,"list":..},"sizes":[...]}, the ratio
being CPU per request at the largest size over CPU per request at the smallest (target <= 1.5).`;

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    sizes: { type: 'string' },
    ops: { type: 'string' },
    seed: { type: 'string', default: '1' },
    child: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log(help);
  process.exit(0);
}

const seed = Number(values.seed);
const ops = Number(values.ops ?? (values.quick ? 150 : 400));

if (values.child !== undefined) {
  // One size, in this (child) process: its result is the last line on stdout.
  const [nodes, tasks] = values.child.split(':').map(Number) as [number, number];
  const result = await measureSize({ nodes, tasks, ops, seed });
  console.log(JSON.stringify(result));
  process.exit(0);
}

const ladder: [number, number][] = values.quick
  ? [
      [100, 1000],
      [1000, 10_000],
      [10_000, 10_000],
    ]
  : [
      [100, 1000],
      [1000, 10_000],
      [10_000, 100_000],
      [100_000, 1_000_000],
    ];
const sizes =
  values.sizes === undefined
    ? ladder
    : values.sizes.split(',').map((p) => p.split(':').map(Number) as [number, number]);
for (const [n, t] of sizes) {
  if (!(Number.isInteger(n) && n > 0 && Number.isInteger(t) && t >= 0)) {
    console.error(`bad size ${n}:${t} (want nodes:tasks, e.g. 1000:10000)`);
    process.exit(2);
  }
}

const script = fileURLToPath(import.meta.url);
const results: SizeResult[] = [];
for (const [nodes, tasks] of sizes) {
  const child = spawnSync(
    process.execPath,
    [
      ...process.execArgv,
      '--expose-gc',
      script,
      '--child',
      `${nodes}:${tasks}`,
      '--ops',
      String(ops),
      '--seed',
      String(seed),
    ],
    { encoding: 'utf8', maxBuffer: 64 * 2 ** 20, stdio: ['ignore', 'pipe', 'inherit'] },
  );
  const last = child.stdout.trim().split('\n').at(-1) ?? '';
  if (child.status !== 0 || !last.startsWith('{')) {
    console.error(`size ${nodes} nodes / ${tasks} tasks failed (exit ${child.status})`);
    process.exit(1);
  }
  const r = JSON.parse(last) as SizeResult;
  results.push(r);
  const cell = (k: keyof SizeResult['ops']) => {
    const o = r.ops[k];
    return `${k} ${o.cpuUs} µs ${o.storeCalls} calls ${o.itemsRead} items${o.ok < o.requests ? ` (${o.requests - o.ok} refused)` : ''}`;
  };
  console.log(
    `${String(nodes).padStart(7)} nodes ${String(tasks).padStart(8)} tasks | populate ${(r.populateMs / 1000).toFixed(1)} s, rss ${r.rssMiB} MiB | ${(['heartbeat', 'poll', 'submit', 'list', 'reaperTick'] as const).map(cell).join(' | ')} | polls that got a task ${r.pollHits}/${r.ops.poll.requests}`,
  );
}

const first = results[0] as SizeResult;
const last = results.at(-1) as SizeResult;
const ratio = (k: keyof SizeResult['ops']) =>
  Math.round((last.ops[k].cpuUs / Math.max(1, first.ops[k].cpuUs)) * 100) / 100;
console.log(
  JSON.stringify({
    costRatio: { poll: ratio('poll'), heartbeat: ratio('heartbeat'), submit: ratio('submit'), list: ratio('list') },
    storeCallsRatio: {
      poll: Math.round((last.ops.poll.storeCalls / Math.max(0.01, first.ops.poll.storeCalls)) * 100) / 100,
      heartbeat:
        Math.round((last.ops.heartbeat.storeCalls / Math.max(0.01, first.ops.heartbeat.storeCalls)) * 100) / 100,
      submit: Math.round((last.ops.submit.storeCalls / Math.max(0.01, first.ops.submit.storeCalls)) * 100) / 100,
    },
    reaperTickRatio: ratio('reaperTick'),
    from: { nodes: first.nodes, tasks: first.tasks },
    to: { nodes: last.nodes, tasks: last.tasks },
    sizes: results.map((r) => ({
      nodes: r.nodes,
      tasks: r.tasks,
      rssMiB: r.rssMiB,
      cpuUs: Object.fromEntries(Object.entries(r.ops).map(([k, o]) => [k, o.cpuUs])),
      storeCalls: Object.fromEntries(Object.entries(r.ops).map(([k, o]) => [k, o.storeCalls])),
    })),
  }),
);
