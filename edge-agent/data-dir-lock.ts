import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { AgentError } from './errors.js';

/** Another agent runs on this data dir; `holderPid` is its process when it could be read. */
export class DataDirLockedError extends AgentError {
  override name = 'DataDirLockedError';
  readonly retryable = false;
  constructor(
    readonly dataDir: string,
    readonly holderPid: number | undefined,
  ) {
    const holder = holderPid === undefined ? '' : ` (pid ${holderPid})`;
    super(
      `the data dir ${dataDir} is in use by another gpuai-agent${holder}: two agents on one data dir would be one node twice`,
    );
  }
}

export interface DataDirLock {
  release(): void;
}

/** File names inside the agent's data dir. */
export const lockFiles = { lock: 'agent.lock', pid: 'agent.pid' } as const;

/**
 * Takes the agent's data dir for this process, or throws DataDirLockedError naming the holder: two
 * agents on one dir share its node key, so they would claim and report as one node.
 *
 * The lock is SQLite's exclusive lock on `<dataDir>/agent.lock`, which is the kernel's advisory
 * record lock underneath: the kernel drops it when its process dies however it dies, so the dir of
 * a SIGKILLed agent is taken over without guessing from a pid that may since have been reused, and
 * two agents racing for it cannot both win. The holder's pid is written beside it only to name it.
 * (The control plane's data-dir lock, embedded/data-dir-lock.ts, works the same way; the agent
 * shares only protocol/ with the control plane, and protocol/ does no I/O, hence this copy.)
 * The lock file is never opened by anything else in the agent: closing any descriptor of a file
 * drops the process's record locks on it.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const db = new Database(join(dataDir, lockFiles.lock), { timeout: 0 });
  try {
    // Empty, but like the node key not for others.
    chmodSync(join(dataDir, lockFiles.lock), 0o600);
    db.pragma('locking_mode = EXCLUSIVE');
    // The first write in exclusive locking mode takes the lock, and the connection keeps it until closed.
    db.exec('BEGIN EXCLUSIVE; COMMIT;');
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new DataDirLockedError(dataDir, holderPid(dataDir));
    throw error;
  }
  writeFileSync(join(dataDir, lockFiles.pid), `${process.pid}\n`, { mode: 0o600 });
  return {
    release() {
      if (!db.open) return;
      rmSync(join(dataDir, lockFiles.pid), { force: true });
      db.close();
    },
  };
}

function holderPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, lockFiles.pid), 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    // The holder took the lock and has not written its pid yet.
    return undefined;
  }
}
