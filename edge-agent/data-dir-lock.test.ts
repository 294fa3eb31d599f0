import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DataDirLockedError, lockDataDir } from './data-dir-lock.js';

// Across real agent processes and after a SIGKILL: test/e2e/agent-data-dir-lock.test.ts.

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('the agent data dir lock', () => {
  it('makes the dir, refuses a second holder naming the first, and is free again once released', () => {
    const parent = mkdtempSync(join(tmpdir(), 'gpuai-agent-lock-'));
    dirs.push(parent);
    const dir = join(parent, 'nested', 'data');
    const lock = lockDataDir(dir);
    expect((statSync(dir).mode & 0o777).toString(8)).toBe('700');
    expect((statSync(join(dir, 'agent.lock')).mode & 0o777).toString(8)).toBe('600');
    expect(readFileSync(join(dir, 'agent.pid'), 'utf8').trim()).toBe(String(process.pid));

    let refused: unknown;
    try {
      lockDataDir(dir);
    } catch (error) {
      refused = error;
    }
    expect(refused).toBeInstanceOf(DataDirLockedError);
    expect(String(refused)).toContain(`in use by another gpuai-agent (pid ${process.pid})`);

    lock.release();
    lock.release();
    lockDataDir(dir).release();
  });
});
