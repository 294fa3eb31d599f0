import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLockedError, lockDataDir } from './data-dir-lock.js';

// Across processes and after a SIGKILL: test/e2e/launcher.test.ts, with real launchers.

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpuai-lock-'));
  dirs.push(dir);
  return dir;
};

describe('lockDataDir', () => {
  it('refuses a second holder, even in the same process, naming the holder, until released', () => {
    const dir = tempDir();
    const lock = lockDataDir(dir);
    expect(readFileSync(join(dir, 'gpuai.pid'), 'utf8').trim()).toBe(String(process.pid));
    expect((statSync(join(dir, 'gpuai.lock')).mode & 0o777).toString(8)).toBe('600');
    let refused: unknown;
    try {
      lockDataDir(dir);
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect(refused).toMatchObject({ holderPid: process.pid });
    expect(String(refused)).toContain(`is in use by another gpuai start (pid ${process.pid})`);

    lock.release();
    lock.release(); // twice is harmless: stop() after a failed start
    const again = lockDataDir(dir);
    again.release();
  });

  it('names no pid when the holder has not written it yet', () => {
    const dir = tempDir();
    const lock = lockDataDir(dir);
    rmSync(join(dir, 'gpuai.pid'));
    expect(() => lockDataDir(dir)).toThrow(/in use by another gpuai start$/);
    lock.release();
  });
});
