import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';

/** Another control plane holds the data dir; `holderPid` is its process when it could be read. */
export class DataDirLockedError extends Error {
  override name = 'DataDirLockedError';
  constructor(
    readonly dataDir: string,
    readonly holderPid: number | undefined,
  ) {
    const holder = holderPid === undefined ? '' : ` (pid ${holderPid})`;
    super(`the data dir ${dataDir} is in use by another gpuai start${holder}`);
  }
}

export interface DataDirLock {
  release(): void;
}

const lockFile = 'gpuai.lock';
const pidFile = 'gpuai.pid';

/**
 * Takes the data dir for this process, or throws DataDirLockedError naming the holder.
 *
 * The lock is SQLite's exclusive lock on `<dataDir>/gpuai.lock`, which is the kernel's advisory
 * record lock underneath: the kernel drops it when its process dies however it dies, so a lock
 * left by a SIGKILLed launcher is taken over without guessing from a pid that may since have been
 * reused (a container's launcher is often pid 1 on every start), and two launchers racing for a
 * stale lock cannot both win. The holder's pid is written beside it only to name it in the error.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const db = new Database(join(dataDir, lockFile), { timeout: 0 });
  try {
    // Empty, but like every file of the data dir not for others (docs/security.md).
    chmodSync(join(dataDir, lockFile), 0o600);
    db.pragma('locking_mode = EXCLUSIVE');
    // The first write in exclusive locking mode takes the lock, and the connection keeps it until closed.
    db.exec('BEGIN EXCLUSIVE; COMMIT;');
  } catch (error) {
    db.close();
    if ((error as { code?: string }).code === 'SQLITE_BUSY') throw new DataDirLockedError(dataDir, holderPid(dataDir));
    throw error;
  }
  writeFileSync(join(dataDir, pidFile), `${process.pid}\n`, { mode: 0o600 });
  return {
    release() {
      if (!db.open) return;
      rmSync(join(dataDir, pidFile), { force: true });
      db.close();
    },
  };
}

function holderPid(dataDir: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(join(dataDir, pidFile), 'utf8'), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    // The holder took the lock and has not written its pid yet.
    return undefined;
  }
}
