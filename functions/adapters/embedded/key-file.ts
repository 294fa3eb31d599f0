import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, fsyncSync, linkSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { assertPrivateKeyFile, ensurePrivateDir } from './private-files.js';

/**
 * Reads the key `<dataDir>/<name>`, first creating the directory (0700) and a fresh random key of
 * `bytes` bytes (0600) when there is none. An existing directory is narrowed to 0700.
 *
 * @throws {@link ExposedKeyFileError} when the key file is readable or writable by group or others.
 * @throws Error when the file holds another number of bytes.
 */
export function readOrCreateKeyFile(dataDir: string, name: string, bytes: number): { file: string; key: Buffer } {
  ensurePrivateDir(dataDir);
  const file = join(dataDir, name);
  if (!existsSync(file)) createKeyFile(file, bytes);
  assertPrivateKeyFile(file);
  const key = readFileSync(file);
  if (key.length !== bytes) throw new Error(`key file ${file} holds ${key.length} bytes instead of ${bytes}`);
  return { file, key };
}

/**
 * Writes a new key to a temporary file, syncs it, then links it into place: the link fails if
 * another process created the key meanwhile (its key then wins), and a crash never leaves a
 * partial key behind.
 */
function createKeyFile(file: string, bytes: number): void {
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o600);
  try {
    writeSync(fd, randomBytes(bytes));
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(temporary, file);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  } finally {
    unlinkSync(temporary);
  }
}
