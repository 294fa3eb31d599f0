import { chmodSync, mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LocalKeys } from './local-keys.js';
import { ExposedKeyFileError } from './private-files.js';
import { openDatabase } from './sqlite.js';

const mode = (path: string) => statSync(path).mode & 0o777;

/** A data directory that exists already with the usual umask's mode, as `mkdir ~/.gpuai` makes it. */
function existingDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'gpuai-modes-'));
  chmodSync(dir, 0o755);
  return dir;
}

describe.skipIf(process.platform === 'win32')('the data directory stays private to its user', () => {
  it('creates gpuai.db and its WAL 0600 in a directory that already existed, and narrows the directory to 0700', () => {
    const dir = existingDir();
    const db = openDatabase(join(dir, 'gpuai.db'));
    db.exec("CREATE TABLE t (x); INSERT INTO t VALUES ('written through the WAL')");
    expect(mode(join(dir, 'gpuai.db'))).toBe(0o600);
    expect(mode(join(dir, 'gpuai.db-wal'))).toBe(0o600);
    expect(mode(dir)).toBe(0o700);
    db.close();
  });

  it('narrows an existing gpuai.db that others could read', () => {
    const dir = existingDir();
    openDatabase(join(dir, 'gpuai.db')).close();
    chmodSync(join(dir, 'gpuai.db'), 0o644);
    openDatabase(join(dir, 'gpuai.db')).close();
    expect(mode(join(dir, 'gpuai.db'))).toBe(0o600);
  });

  it('creates the master key 0600, and refuses one that others could read, saying how to fix it', () => {
    const dir = existingDir();
    LocalKeys.open(dir);
    expect(mode(join(dir, 'master.key'))).toBe(0o600);

    chmodSync(join(dir, 'master.key'), 0o644);
    const refused = (() => {
      try {
        LocalKeys.open(dir);
      } catch (error) {
        return error;
      }
    })();
    expect(refused).toBeInstanceOf(ExposedKeyFileError);
    expect((refused as Error).message).toContain('mode 0644');
    expect((refused as Error).message).toContain(`chmod 600 ${join(dir, 'master.key')}`);
    // Not narrowed behind the user's back: the key may already be in other hands.
    expect(mode(join(dir, 'master.key'))).toBe(0o644);

    chmodSync(join(dir, 'master.key'), 0o600);
    expect(() => LocalKeys.open(dir)).not.toThrow();
  });

  it('refuses a master key that others could write (a planted key)', () => {
    const dir = existingDir();
    writeFileSync(join(dir, 'master.key'), Buffer.alloc(32, 7), { mode: 0o600 });
    chmodSync(join(dir, 'master.key'), 0o620);
    expect(() => LocalKeys.open(dir)).toThrow(ExposedKeyFileError);
  });
});
