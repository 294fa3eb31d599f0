import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { type LogEntry, parseLogLine } from '../protocol/log-line.js';
import type { Log } from './log.js';

const agentBin = fileURLToPath(new URL('../bin/gpuai-agent.js', import.meta.url));

export interface LocalAgentOptions {
  api: string;
  dataDir: string;
  slots: number;
  /** The join token the agent enrolls with (GPUAI_JOIN_TOKEN in its environment, never an argument). */
  joinToken?: string;
  log: Log;
}

/**
 * One line the agent printed, as a log entry marked `source: 'agent'`: its JSON log lines keep their
 * own time, level and fields; anything else (a crash's stack trace, a warning from Node) is a
 * warning with the line as its message.
 */
export function agentEntry(line: string): LogEntry {
  const entry = parseLogLine(line);
  return entry === undefined ? { level: 'warn', msg: line, source: 'agent' } : { ...entry, source: 'agent' };
}

/**
 * Runs one edge agent as its own process beside the embedded control plane (the control plane
 * never imports the agent), restarting it if it dies, and stopping it gracefully with SIGTERM.
 * Its tasks run as the agent's default task user: `nobody` when this process is root.
 */
export function startLocalAgent(options: LocalAgentOptions): { stop(): Promise<void> } {
  let child: ChildProcess | undefined;
  let stopping = false;
  let restarts = 0;

  const launch = () => {
    const args = ['run', '--api', options.api, '--runtime', 'process', '--data-dir', options.dataDir];
    // JSON lines, so its entries reach the launcher's log as entries, in whichever format that writes.
    args.push('--name', 'local', '--slots', String(options.slots), '--json-logs');
    const env = { ...process.env };
    // The agent stays root when the launcher is (it keeps its node key in `<dataDir>/agent`), and
    // runs each task as `nobody` (its default): a task must not read the admin key or master key
    // in the control plane's data dir. Not root: tasks run as this user, and the agent warns.
    delete env.GPUAI_AGENT_TASK_USER;
    if (options.joinToken === undefined) delete env.GPUAI_JOIN_TOKEN;
    else env.GPUAI_JOIN_TOKEN = options.joinToken;
    const proc = spawn(process.execPath, [agentBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    child = proc;
    for (const stream of [proc.stdout, proc.stderr]) {
      if (stream) createInterface({ input: stream }).on('line', (line) => options.log(agentEntry(line)));
    }
    proc.on('exit', (code, signal) => {
      child = undefined;
      if (stopping) return;
      restarts++;
      const delay = Math.min(30_000, 500 * 2 ** Math.min(restarts, 6));
      options.log({ level: 'warn', msg: 'local agent exited; restarting', code, signal, inMs: delay });
      setTimeout(() => {
        if (!stopping) launch();
      }, delay).unref();
    });
  };
  launch();

  return {
    async stop() {
      stopping = true;
      const proc = child;
      if (proc === undefined || proc.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
      });
    },
  };
}
