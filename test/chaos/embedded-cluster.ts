import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.js';
import { adminKeyOf, fastTimings, freePort, Proc, repoRoot } from '../support/processes.js';
import { onAbruptExit } from './run-core.js';

/** Where the clock-skew preload lives (an absolute file URL: NODE_OPTIONS is read from any cwd). */
const skewClock = new URL('./skew-clock.mjs', import.meta.url).href;

export const chaosTimings = fastTimings;
export const leaseMs = Number(fastTimings.GPUAI_LEASE_MS);

export interface ChaosAgent {
  name: string;
  dataDir: string;
  proxy: FaultProxy;
  proc: Proc;
  /** The wall-clock skew of its host, ms (0: none). */
  skewMs: number;
  /** Its TMPDIR (its work dirs) sits on a small tmpfs the harness can fill. */
  smallDisk?: SmallDisk;
  restarts: number;
}

/** A tmpfs of a few KiB and a few inodes, filled and emptied on demand: a real ENOSPC. */
export class SmallDisk {
  private fillers = 0;
  private forget = () => {};
  private constructor(readonly path: string) {}

  /** Mounts one at `path`; undefined where mounting is not allowed (not root). */
  static mount(path: string): SmallDisk | undefined {
    mkdirSync(path, { recursive: true });
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=512k,nr_inodes=256,mode=1777', 'tmpfs', path], {
        stdio: 'ignore',
      });
      const disk = new SmallDisk(path);
      disk.forget = onAbruptExit(() => disk.unmount());
      return disk;
    } catch {
      return undefined;
    }
  }

  /** Fills every block and inode left. */
  fill(): void {
    const dir = join(this.path, `.fill-${++this.fillers}`);
    try {
      mkdirSync(dir);
      writeFileSync(join(dir, 'blocks'), Buffer.alloc(1024 * 1024));
    } catch {
      // ENOSPC is the point
    }
    for (let i = 0; i < 1000; i++) {
      try {
        writeFileSync(join(dir, `inode-${i}`), '');
      } catch {
        break;
      }
    }
  }

  free(): void {
    for (let i = 1; i <= this.fillers; i++) rmSync(join(this.path, `.fill-${i}`), { recursive: true, force: true });
  }

  unmount(): void {
    this.forget();
    try {
      execFileSync('umount', ['-l', this.path], { stdio: 'ignore' });
    } catch {
      // already gone
    }
  }
}

export interface ClusterOptions {
  root: string;
  agents: number;
  slots: number;
  /** Agents whose clock is skewed (+30 s, -30 s alternating). */
  skewedAgents: number;
  /** Give one agent a small disk that faults can fill. */
  smallDisk: boolean;
  log?: (line: string) => void;
}

/**
 * The embedded control plane as a real process on a fixed port and data dir (so it can be killed
 * and started again), with real agent processes (process runtime), each talking to it through its
 * own fault proxy.
 */
export class EmbeddedCluster {
  controlPlane!: Proc;
  port!: number;
  readonly agents: ChaosAgent[] = [];
  readonly cpDir: string;
  readonly disks: SmallDisk[] = [];
  controlPlaneRestarts = 0;
  /** Agents that exited without being killed: a fault must never make an agent give up. */
  readonly unexpectedExits: string[] = [];

  constructor(readonly options: ClusterOptions) {
    this.cpDir = join(options.root, 'control-plane');
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get dbFile(): string {
    return join(this.cpDir, 'gpuai.db');
  }

  adminKey(): string {
    return adminKeyOf(this.cpDir);
  }

  async start(): Promise<void> {
    this.port = await freePort();
    this.startControlPlane();
    await this.untilHealthy();
    for (let i = 0; i < this.options.agents; i++) {
      const skewMs = i < this.options.skewedAgents ? (i % 2 === 0 ? 30_000 : -30_000) : 0;
      const dataDir = join(this.options.root, `agent-${i}`);
      mkdirSync(dataDir, { recursive: true });
      let smallDisk: SmallDisk | undefined;
      if (this.options.smallDisk && i === this.options.agents - 1) {
        smallDisk = SmallDisk.mount(join(this.options.root, `agent-${i}-tmp`));
        if (smallDisk) this.disks.push(smallDisk);
      }
      const proxy = await startFaultProxy(this.url);
      const agent: ChaosAgent = {
        name: `chaos-agent-${i}`,
        dataDir,
        proxy,
        skewMs,
        ...(smallDisk === undefined ? {} : { smallDisk }),
        proc: undefined as unknown as Proc,
        restarts: 0,
      };
      agent.proc = this.spawnAgent(agent);
      this.agents.push(agent);
    }
  }

  startControlPlane(): void {
    const args = ['start', '--no-agent', '--port', String(this.port), '--data-dir', this.cpDir];
    this.controlPlane = spawnDetached([join(repoRoot, 'bin', 'gpuai.js'), ...args], {
      ...process.env,
      ...fastTimings,
      GPUAI_ENROLLMENT: 'open',
      // One submitter and many agents on loopback: the abuse limits are not under test here.
      GPUAI_RATE_LIMITS: 'address=0/60,key=0/60,node=0/60,register=0/60,registerGlobal=0/60',
      GPUAI_QUOTAS: 'maxOpenTasks=100000000,gpuHoursPerDay=100000000',
      GPUAI_LOG_FORMAT: 'json',
    });
  }

  async untilHealthy(timeoutMs = 60_000): Promise<void> {
    const until = Date.now() + timeoutMs;
    for (;;) {
      try {
        if ((await fetch(`${this.url}/healthz`)).ok) return;
      } catch {
        // starting
      }
      if (!this.controlPlane.alive) throw new Error(`the control plane exited:\n${this.controlPlane.tail()}`);
      if (Date.now() > until) throw new Error(`the control plane did not start:\n${this.controlPlane.tail()}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** kill -9 the control plane; `downMs` later start it again on the same port and data dir. */
  async restartControlPlane(downMs: number): Promise<void> {
    if (this.restarting !== undefined) return this.restarting;
    this.restarting = (async () => {
      await this.controlPlane.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, downMs));
      this.startControlPlane();
      this.controlPlaneRestarts++;
      await this.untilHealthy();
    })().finally(() => {
      this.restarting = undefined;
    });
    return this.restarting;
  }

  private restarting: Promise<void> | undefined;

  spawnAgent(agent: ChaosAgent): Proc {
    return spawnChaosAgent(agent, this.options.slots, (line) => {
      this.unexpectedExits.push(line);
      this.options.log?.(line);
    });
  }

  /** SIGKILL an agent; `downMs` later it starts again with the same identity (a host that rebooted). */
  async killAgent(agent: ChaosAgent, downMs: number): Promise<void> {
    await agent.proc.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, downMs));
    agent.proc = this.spawnAgent(agent);
    agent.restarts++;
  }

  async stop(): Promise<void> {
    await Promise.all(this.agents.map((a) => killGroup(a.proc)));
    if (this.controlPlane) await killGroup(this.controlPlane);
    await Promise.all(this.agents.map((a) => a.proxy.close()));
    for (const disk of this.disks) disk.unmount();
  }
}

/**
 * Starts an agent process (process runtime, JSON logs) talking through its fault proxy, with its
 * clock skewed and its TMPDIR on its small disk where it has them. An exit that is not the run's
 * own SIGKILL is a defect: `onUnexpectedExit` gets it with the agent's last output.
 */
export function spawnChaosAgent(agent: ChaosAgent, slots: number, onUnexpectedExit: (line: string) => void): Proc {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (agent.skewMs !== 0) {
    env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --import ${skewClock}`.trim();
    env.GPUAI_CHAOS_CLOCK_SKEW_MS = String(agent.skewMs);
  }
  if (agent.smallDisk) env.TMPDIR = agent.smallDisk.path;
  const args = [
    join(repoRoot, 'bin', 'gpuai-agent.js'),
    'run',
    '--api',
    agent.proxy.url,
    '--runtime',
    'process',
    '--data-dir',
    agent.dataDir,
    '--name',
    agent.name,
    '--slots',
    String(slots),
    '--poll-wait',
    '2',
    '--grace-seconds',
    '1',
    '--json-logs',
  ];
  const proc = spawnDetached(args, env);
  void proc.exited.then(({ code, signal }) => {
    if (signal === 'SIGKILL') return;
    onUnexpectedExit(`${agent.name} exited (${code ?? signal}):\n${proc.tail()}`);
  });
  return proc;
}

/**
 * A node process in its own process group, so a Ctrl-C in the terminal (sent to the whole
 * foreground group) reaches the harness alone, which then heals, drains and reports with the
 * cluster still up. The harness must therefore kill the group itself on every way out: the
 * orderly one ({@link killGroup}) and, for a second signal or a crash, an {@link onAbruptExit}
 * hook that stands while the process runs.
 */
function spawnDetached(args: string[], env: NodeJS.ProcessEnv): Proc {
  const proc = new Proc(spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'], detached: true }));
  const pid = proc.child.pid;
  if (pid !== undefined) {
    const forget = onAbruptExit(() => signalGroup(pid, 'SIGKILL'));
    void proc.exited.then(forget);
  }
  return proc;
}

/** SIGKILLs a detached process and whatever it started in its group (an agent's tasks). */
export function killGroup(proc: Proc): Promise<unknown> {
  const pid = proc.child.pid;
  if (proc.alive && pid !== undefined) signalGroup(pid, 'SIGKILL');
  return proc.exited;
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // the group is gone
  }
}
