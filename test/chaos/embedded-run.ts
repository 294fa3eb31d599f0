import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { isTerminal } from '../../functions/domain/scheduling/task-record.js';
import { queueDefinitions } from '../../functions/workers/queues.js';
import { taskIdOf } from '../../protocol/index.js';
import { type ChaosAgent, EmbeddedCluster, leaseMs } from './embedded-cluster.js';
import { checkInvariants } from './invariants.js';
import type { ChaosReport } from './report.js';
import { RogueNode } from './rogue-node.js';
import {
  defaultFaultPhaseLimitMs,
  FaultCounter,
  type FaultKind,
  onAbruptExit,
  percentile,
  type RunOptions,
  Submitter,
  seededRandom,
  summarise,
  untilQuiet,
} from './run-core.js';
import { openTaskCount, readSqliteState } from './state.js';

export type EmbeddedFault = Extract<
  FaultKind,
  | 'agent-sigkill'
  | 'control-plane-kill'
  | 'duplicate-messages'
  | 'network-cut'
  | 'garbled-answers'
  | 'clock-skew'
  | 'disk-full'
  | 'rogue-node'
>;

/**
 * A chaos run over the embedded deployment: the control plane and the agents are real processes;
 * faults are injected at random (seeded) moments while jobs are submitted; then every fault is
 * healed, the run waits for the backlog, and the invariant checker reads the SQLite file.
 */
export async function runEmbeddedChaos(options: RunOptions): Promise<ChaosReport> {
  const random = seededRandom(options.seed);
  const root = mkdtempSync(join(tmpdir(), 'gpuai-chaos-'));
  // An agent running as root runs tasks as nobody, who must get through to the small disk's work dirs.
  chmodSync(root, 0o755);
  const forgetRoot = options.keepData ? () => {} : onAbruptExit(() => rmSync(root, { recursive: true, force: true }));
  const cluster = new EmbeddedCluster({
    root,
    agents: options.agents,
    slots: options.slots,
    skewedAgents: Math.min(2, options.agents - 1),
    smallDisk: true,
    ...(options.log === undefined ? {} : { log: options.log }),
  });
  const faults = new FaultCounter();
  const startedAt = Date.now();
  const notes: string[] = [];
  let rogue: RogueNode | undefined;
  let duplicator: SqliteQueue | undefined;
  try {
    await cluster.start();
    for (const agent of cluster.agents) if (agent.skewMs !== 0) faults.add('clock-skew');
    if (cluster.disks.length === 0) {
      options.log?.('disk-full: not injected (mounting a small tmpfs needs root)');
      notes.push('disk-full not injected: mounting a small tmpfs needs root');
    }
    rogue = new RogueNode(() => cluster.url, random);
    const rogueRun = rogue.run();

    const submitter = new Submitter(
      () => cluster.url,
      () => cluster.adminKey(),
      options,
      random,
    );
    const submitting = submitter.run();
    let submitted = false;
    void submitting.finally(() => {
      submitted = true;
    });

    duplicator = new SqliteQueue(openDatabase(cluster.dbFile), queueDefinitions);
    const injectors: Record<EmbeddedFault, () => Promise<void>> = {
      'agent-sigkill': async () => {
        const agent = pick(
          random,
          cluster.agents.filter((a) => a.proc.alive),
        );
        if (!agent) return;
        faults.add('agent-sigkill');
        await cluster.killAgent(agent, 300 + random() * 1500);
      },
      'control-plane-kill': async () => {
        faults.add('control-plane-kill');
        await cluster.restartControlPlane(200 + random() * 1300);
      },
      'duplicate-messages': async () => {
        const queue = duplicator as SqliteQueue;
        const n = await duplicateMessages(queue, cluster.dbFile, submitter.acceptedIds(), random);
        faults.add('duplicate-messages', n);
      },
      'network-cut': async () => {
        const agent = pick(random, cluster.agents);
        if (!agent) return;
        faults.add('network-cut');
        agent.proxy.cut(random() < 0.5 ? 'reset' : 'hang');
        // Longer than a lease: the control plane must take the agent's tasks back.
        await pause(leaseMs + 1000 + random() * 1500);
        agent.proxy.restore();
      },
      'garbled-answers': async () => {
        const agent = pick(random, cluster.agents);
        if (!agent) return;
        faults.add('garbled-answers', 4);
        agent.proxy.garbleNext(2);
        agent.proxy.failNext(2, random() < 0.5 ? 503 : 500);
      },
      'clock-skew': async () => {
        // Skewed hosts are started skewed; a restart of one (after a kill) counts again.
      },
      'disk-full': async () => {
        const disk = cluster.disks[0];
        if (!disk) return;
        faults.add('disk-full');
        disk.fill();
        await pause(2000 + random() * 3000);
        disk.free();
      },
      'rogue-node': async () => {
        // The rogue works throughout; its garbage is counted from its own tally at the end.
      },
    };
    const kinds = (Object.keys(injectors) as EmbeddedFault[]).filter(
      (k) =>
        k !== 'clock-skew' &&
        k !== 'rogue-node' &&
        (k !== 'disk-full' || cluster.disks.length > 0) &&
        (options.faultKinds === undefined || options.faultKinds.includes(k)),
    );
    const weights: Partial<Record<EmbeddedFault, number>> = { 'control-plane-kill': 0.4, 'agent-sigkill': 1.5 };

    const soak = new SoakMeter(startedAt, leaseMs);
    // Faults run while jobs are submitted; long ones (cuts, restarts) overlap the next ones.
    const busy = new Set<Promise<void>>();
    let lastRestart = Date.now();
    let progressAt = Date.now();
    // Faults go on until the submissions are in and most of the backlog has drained, so they hit
    // work in every state; the last tenth drains in peace (or the soak is stopped).
    const backlogLeft = () => {
      try {
        return openTaskCount(cluster.dbFile);
      } catch {
        return Number.POSITIVE_INFINITY;
      }
    };
    const faultPhaseEnds = startedAt + (options.faultPhaseLimitMs ?? defaultFaultPhaseLimitMs(options.jobs));
    // A quick run drains before chance has picked every kind: go on until each was tried once.
    const tried = new Set<EmbeddedFault>();
    while (
      !submitted ||
      kinds.some((k) => !tried.has(k)) ||
      (options.soak ? !options.stop?.aborted : backlogLeft() > Math.max(10, submitter.acceptedCount / 10))
    ) {
      if (options.stop?.aborted) break;
      if (!options.soak && Date.now() > faultPhaseEnds) {
        // Stuck tasks must end the run with a report naming them, not hang it.
        const line = `fault phase stopped at its limit (${Math.round((Date.now() - startedAt) / 1000)} s) with ${backlogLeft()} task(s) open`;
        options.log?.(line);
        notes.push(line);
        break;
      }
      await pause(options.faultEveryMs * (0.5 + random()));
      if (kinds.length === 0) continue;
      let kind = weightedPick(random, kinds, weights);
      // One control plane restart at a time, and a while between them, so work gets done in between.
      if (kind === 'control-plane-kill' && Date.now() - lastRestart < options.controlPlaneRestartEveryMs)
        kind = 'duplicate-messages';
      if (kind === 'control-plane-kill') lastRestart = Date.now();
      tried.add(kind);
      const running = injectors[kind]().catch((error) => options.log?.(`fault ${kind} failed: ${String(error)}`));
      busy.add(running);
      void running.finally(() => busy.delete(running));
      if (Date.now() - progressAt > options.progressEveryMs) {
        progressAt = Date.now();
        options.onProgress?.(
          options.soak
            ? soak.line(cluster.dbFile, submitter, faults)
            : progressLine(cluster, submitter, faults, startedAt),
        );
      }
    }
    // Heal everything, then give the backlog time to drain.
    submitter.stop();
    await submitting;
    await Promise.all(busy);
    rogue.stop();
    await rogueRun;
    for (const agent of cluster.agents) {
      agent.proxy.restore();
      if (!agent.proc.alive) agent.proc = cluster.spawnAgent(agent);
    }
    for (const disk of cluster.disks) disk.free();
    faults.add('rogue-node', rogue.garbageSent);
    await cluster.untilHealthy();

    await untilQuiet(
      () => openTaskCount(cluster.dbFile),
      options,
      () => options.onProgress?.(progressLine(cluster, submitter, faults, startedAt)),
    );
    const state = readSqliteState(cluster.dbFile);
    return summarise({
      mode: 'embedded',
      state,
      ledger: { ...submitter.ledger(leaseMs), quiesced: true },
      faults: faults.counts,
      startedAt,
      serverErrors: [...submitter.serverErrors, ...rogue.serverErrors],
      unavailable: submitter.unavailable + rogue.unavailable,
      notes,
      agentExits: cluster.unexpectedExits,
      kinds: submitter.kinds,
    });
  } finally {
    rogue?.stop();
    await duplicator?.close();
    await cluster.stop().catch(() => undefined);
    forgetRoot();
    if (!options.keepData) rmSync(root, { recursive: true, force: true });
    else options.log?.(`data kept in ${root}`);
  }
}

/**
 * Delivers queue messages twice and out of order: copies of what is in the queues now, delayed at
 * random (so they arrive after later ones), and stale triggers for tasks that have moved on.
 */
async function duplicateMessages(
  queue: SqliteQueue,
  dbFile: string,
  accepted: readonly string[],
  random: () => number,
): Promise<number> {
  const db = openDatabase(dbFile);
  let sent = 0;
  try {
    const pending = db
      .prepare("SELECT queue, body FROM messages WHERE queue IN ('schedule', 'verify') ORDER BY random() LIMIT 10")
      .all() as { queue: string; body: string }[];
    for (const m of pending) {
      await queue.send(m.queue, m.body, { delaySeconds: Math.floor(random() * 4) });
      sent++;
    }
  } finally {
    db.close();
  }
  for (let i = 0; i < 3 && accepted.length > 0; i++) {
    const jobId = accepted[Math.floor(random() * accepted.length)] as string;
    await queue.send(queueNames.schedule, JSON.stringify({ jobId }), { delaySeconds: Math.floor(random() * 3) });
    const attempt = 1 + Math.floor(random() * 3);
    await queue.send(queueNames.verify, JSON.stringify({ taskId: taskIdOf(jobId, 0), attempt }));
    sent += 2;
  }
  return sent;
}

function progressLine(cluster: EmbeddedCluster, submitter: Submitter, faults: FaultCounter, startedAt: number): string {
  let open = -1;
  try {
    open = openTaskCount(cluster.dbFile);
  } catch {
    // the file is being written: next time
  }
  const s = Math.round((Date.now() - startedAt) / 1000);
  const live = cluster.agents.filter((a) => a.proc.alive).length;
  return `[${s}s] accepted ${submitter.acceptedCount} jobs, ${open} task(s) open, ${live} agent(s) up, faults ${faults.total} (${faults.describe()})`;
}

/** --soak: throughput, latency and the invariants that hold at every instant, per interval. */
class SoakMeter {
  private endedBefore = 0;
  private at: number;
  constructor(
    private readonly startedAt: number,
    private readonly leaseMs: number,
  ) {
    this.at = startedAt;
  }
  line(dbFile: string, submitter: Submitter, faults: FaultCounter): string {
    const now = Date.now();
    const state = readSqliteState(dbFile);
    const ended = state.tasks.filter((t) => isTerminal(t.state));
    const inInterval = ended.filter((t) => t.updatedAt > this.at);
    const latencies = state.jobs
      .map((j) => {
        const tasks = state.tasks.filter((t) => t.jobId === j.id);
        const last = Math.max(...tasks.map((t) => t.updatedAt));
        return tasks.every((t) => isTerminal(t.state)) && last > this.at ? last - j.createdAt : undefined;
      })
      .filter((x): x is number => x !== undefined)
      .sort((a, b) => a - b);
    const results = checkInvariants(state, submitter.ledger(this.leaseMs));
    const failed = results.filter((r) => !r.passed);
    const rate = (ended.length - this.endedBefore) / ((now - this.at) / 1000);
    this.endedBefore = ended.length;
    this.at = now;
    return [
      `[${Math.round((now - this.startedAt) / 1000)}s]`,
      `jobs ${submitter.acceptedCount}`,
      `tasks ended ${ended.length} (+${inInterval.length}, ${rate.toFixed(2)}/s)`,
      `latency p50 ${percentile(latencies, 50)} ms p95 ${percentile(latencies, 95)} ms`,
      `invariants ${results.length - failed.length}/${results.length} passed${failed.length ? ` FAILED: ${failed.map((f) => f.name).join(', ')}` : ''}`,
      `faults ${faults.total}`,
    ].join(' | ');
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pick<T>(random: () => number, items: readonly T[]): T | undefined {
  return items.length === 0 ? undefined : items[Math.floor(random() * items.length)];
}

function weightedPick<T extends string>(
  random: () => number,
  items: readonly T[],
  weights: Partial<Record<T, number>>,
): T {
  const total = items.reduce((n, k) => n + (weights[k] ?? 1), 0);
  let r = random() * total;
  for (const k of items) {
    r -= weights[k] ?? 1;
    if (r <= 0) return k;
  }
  return items[items.length - 1] as T;
}

export type { ChaosAgent };
