import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { EmulatorEndpoints } from '../emulators/emulators.js';
import { CloudCluster, cloudLeaseMs } from './cloud-cluster.js';
import type { ChaosReport } from './report.js';
import { RogueNode } from './rogue-node.js';
import {
  FaultCounter,
  type FaultKind,
  type RunOptions,
  Submitter,
  seededRandom,
  summarise,
  untilQuiet,
} from './run-core.js';

/** The faults of the cloud run: the embedded ones that apply, and throttled DynamoDB and KMS. */
export type CloudFault = Extract<
  FaultKind,
  | 'agent-sigkill'
  | 'duplicate-messages'
  | 'network-cut'
  | 'garbled-answers'
  | 'clock-skew'
  | 'disk-full'
  | 'rogue-node'
  | 'kms-throttle'
  | 'dynamodb-throttle'
>;

export interface CloudRunOptions extends RunOptions {
  /** Where the emulators answer (the vitest global setup's, or ones `npm run chaos` started). */
  endpoints: EmulatorEndpoints;
  dispatch?: 'long-poll' | 'sqs';
}

/**
 * A chaos run over the cloud deployment on the emulators: the Lambda handlers in-process
 * (test/chaos/cloud-cluster.ts), real agent processes, faults at seeded random moments while jobs
 * are submitted, then every fault healed, the backlog drained, and the invariant checker run over
 * a scan of the DynamoDB table. There is no control plane process to kill: Lambda's instances are
 * stateless, and the store and the queues are the services being throttled instead.
 */
export async function runCloudChaos(options: CloudRunOptions): Promise<ChaosReport> {
  const random = seededRandom(options.seed);
  const root = mkdtempSync(join(tmpdir(), 'gpuai-chaos-cloud-'));
  // An agent running as root runs tasks as nobody, who must get through to the small disk's work dirs.
  chmodSync(root, 0o755);
  const cluster = new CloudCluster({
    root,
    endpoints: options.endpoints,
    agents: options.agents,
    slots: options.slots,
    skewedAgents: Math.min(2, options.agents - 1),
    smallDisk: true,
    dispatch: options.dispatch ?? 'long-poll',
    random,
    ...(options.log === undefined ? {} : { log: options.log }),
  });
  const faults = new FaultCounter();
  const startedAt = Date.now();
  let rogue: RogueNode | undefined;
  try {
    await cluster.start();
    for (const agent of cluster.agents) if (agent.skewMs !== 0) faults.add('clock-skew');
    rogue = new RogueNode(() => cluster.url, random);
    const rogueRun = rogue.run();
    const submitter = new Submitter(
      () => cluster.url,
      () => cluster.apiKey,
      options,
      random,
    );
    const submitting = submitter.run();
    let submitted = false;
    void submitting.finally(() => {
      submitted = true;
    });

    const throttle = async (rule: { fraction: number; answered: number }) => {
      // A burst of throttling: a quarter to two thirds of the requests refused for 1.5 to 4 s, so
      // some calls fail past the SDK's retries and the handlers' answers to that are exercised.
      // It lasts until it has refused one request at least (KMS is called only at submissions and
      // sealed claims, which a short burst can miss), or 20 s.
      const before = rule.answered;
      const until = Date.now() + 20_000;
      rule.fraction = 0.25 + random() * 0.4;
      await pause(1500 + random() * 2500);
      while (rule.answered === before && Date.now() < until && !options.stop?.aborted) await pause(250);
      rule.fraction = 0;
    };
    const injectors: Record<CloudFault, () => Promise<void>> = {
      'agent-sigkill': async () => {
        const alive = cluster.agents.filter((a) => a.proc.alive);
        const agent = alive[Math.floor(random() * alive.length)];
        if (!agent) return;
        faults.add('agent-sigkill');
        await cluster.killAgent(agent, 300 + random() * 1500);
      },
      'duplicate-messages': async () => {
        cluster.duplicateBatches += 3;
        faults.add('duplicate-messages', await cluster.sendStaleTriggers(submitter.acceptedIds(), random));
      },
      'network-cut': async () => {
        const agent = cluster.agents[Math.floor(random() * cluster.agents.length)];
        if (!agent) return;
        faults.add('network-cut');
        agent.proxy.cut(random() < 0.5 ? 'reset' : 'hang');
        // Longer than a lease: the control plane must take the agent's tasks back.
        await pause(cloudLeaseMs + 1000 + random() * 1500);
        agent.proxy.restore();
      },
      'garbled-answers': async () => {
        const agent = cluster.agents[Math.floor(random() * cluster.agents.length)];
        if (!agent) return;
        faults.add('garbled-answers', 4);
        agent.proxy.garbleNext(2);
        agent.proxy.failNext(2, random() < 0.5 ? 503 : 500);
      },
      'disk-full': async () => {
        const disk = cluster.disks[0];
        if (!disk) return;
        faults.add('disk-full');
        disk.fill();
        await pause(2000 + random() * 3000);
        disk.free();
      },
      // Counted from the throttle rules' own tallies at the end: requests actually refused.
      'kms-throttle': () => throttle(cluster.throttles.kms),
      'dynamodb-throttle': () => throttle(cluster.throttles.dynamodb),
      // Skewed agents are started skewed; the rogue works throughout and is counted at the end.
      'clock-skew': async () => undefined,
      'rogue-node': async () => undefined,
    };
    const kinds = (Object.keys(injectors) as CloudFault[]).filter(
      (k) =>
        k !== 'clock-skew' &&
        k !== 'rogue-node' &&
        (k !== 'disk-full' || cluster.disks.length > 0) &&
        (options.faultKinds === undefined || options.faultKinds.includes(k)),
    );

    const busy = new Set<Promise<void>>();
    const throttling = { 'kms-throttle': false, 'dynamodb-throttle': false } as Record<string, boolean>;
    let progressAt = Date.now();
    const backlogLeft = () => cluster.openTasks().catch(() => Number.POSITIVE_INFINITY);
    // Kinds in rounds, each a shuffled permutation of them all, so a short run still injects every
    // kind; faults go on until the submissions are in, one round is through and most of the
    // backlog has drained.
    let round: CloudFault[] = [];
    let rounds = 0;
    const nextKind = (): CloudFault => {
      if (round.length === 0) {
        round = [...kinds].sort(() => random() - 0.5);
        // The first round throttles first, while jobs are still being submitted: a submission is
        // the one KMS call every job makes.
        if (rounds === 0) round.sort((a, b) => Number(a.endsWith('-throttle')) - Number(b.endsWith('-throttle')));
        rounds++;
      }
      return round.pop() as CloudFault;
    };
    const oneRoundDone = () => kinds.length === 0 || rounds > 1 || (rounds === 1 && round.length === 0);
    while (!submitted || !oneRoundDone() || (await backlogLeft()) > Math.max(10, submitter.acceptedCount / 10)) {
      if (options.stop?.aborted) break;
      await pause(options.faultEveryMs * (0.5 + random()));
      if (Date.now() - progressAt > options.progressEveryMs) {
        progressAt = Date.now();
        options.onProgress?.(await progressLine(cluster, submitter, faults, startedAt));
      }
      if (kinds.length === 0) continue;
      let kind = nextKind();
      // One burst of each throttle at a time (a second would end the first's early).
      if (throttling[kind] === true) kind = 'duplicate-messages';
      if (kind in throttling) throttling[kind] = true;
      const running = injectors[kind]()
        .catch((error) => options.log?.(`fault ${kind} failed: ${String(error)}`))
        .finally(() => {
          if (kind in throttling) throttling[kind] = false;
        });
      busy.add(running);
      void running.finally(() => busy.delete(running));
    }
    // Heal everything, then give the backlog time to drain.
    submitter.stop();
    await submitting;
    await Promise.all(busy);
    rogue.stop();
    await rogueRun;
    cluster.throttles.kms.fraction = 0;
    cluster.throttles.dynamodb.fraction = 0;
    cluster.duplicateBatches = 0;
    for (const agent of cluster.agents) {
      agent.proxy.restore();
      if (!agent.proc.alive) agent.proc = cluster.spawnAgent(agent);
    }
    for (const disk of cluster.disks) disk.free();
    faults.add('rogue-node', rogue.garbageSent);
    faults.add('duplicate-messages', cluster.duplicatesDelivered);
    faults.add('kms-throttle', cluster.throttles.kms.answered);
    faults.add('dynamodb-throttle', cluster.throttles.dynamodb.answered);

    await untilQuiet(
      () => cluster.openTasks(),
      options,
      () => void progressLine(cluster, submitter, faults, startedAt).then((line) => options.onProgress?.(line)),
    );
    const state = await cluster.readState();
    return summarise({
      mode: 'cloud',
      state,
      ledger: { ...submitter.ledger(cloudLeaseMs), quiesced: true },
      faults: faults.counts,
      startedAt,
      // The gateway saw every answer the handlers gave (the submitter's, the rogue's and the
      // agents'), so its tally is the whole count; the clients' own would count theirs twice.
      serverErrors: cluster.serverErrors,
      unavailable: cluster.unavailable,
      notes: [
        ...(cluster.disks.length === 0 ? ['disk-full not injected: mounting a small tmpfs needs root'] : []),
        ...cluster.usage(),
        ...cluster.unavailableExamples.map((e) => `503: ${e}`),
      ],
      agentExits: cluster.unexpectedExits,
      kinds: submitter.kinds,
    });
  } finally {
    rogue?.stop();
    await cluster.stop().catch(() => undefined);
    if (!options.keepData) rmSync(root, { recursive: true, force: true });
    else options.log?.(`agent data kept in ${root}`);
  }
}

async function progressLine(
  cluster: CloudCluster,
  submitter: Submitter,
  faults: FaultCounter,
  startedAt: number,
): Promise<string> {
  const open = await cluster.openTasks().catch(() => -1);
  const s = Math.round((Date.now() - startedAt) / 1000);
  const live = cluster.agents.filter((a) => a.proc.alive).length;
  const throttled = cluster.throttles.dynamodb.answered + cluster.throttles.kms.answered;
  return `[${s}s] accepted ${submitter.acceptedCount} jobs, ${open} task(s) open, ${live} agent(s) up, faults ${faults.total} (${faults.describe()}), ${throttled} AWS request(s) throttled, ${cluster.unavailable} 503(s)`;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
