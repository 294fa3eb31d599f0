import { chmodSync, closeSync, existsSync, mkdirSync, openSync, statSync } from 'node:fs';

/**
 * The embedded deployment's data directory holds the master key and the database: both private to
 * the user who runs the control plane. A mode that `mkdir`/`open` were given applies only when
 * they create the path, and then through the umask, so a directory or file that already existed
 * keeps whatever mode it had; these helpers check and narrow it. (POSIX modes only: on Windows
 * they do nothing.)
 */
const posix = process.platform !== 'win32';

/** `mode & 0o777` as `0644`, for messages. */
export const modeText = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`;

/** Creates `dir` (0700), or narrows an existing one to 0700 when others could read or enter it. */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (posix && (statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
}

/**
 * Makes `file` exist with mode 0600 before a library opens it (SQLite would create it 0644, and
 * creates its `-wal` and `-shm` files with the database file's mode), and narrows an existing
 * file, with those companions, to 0600.
 */
export function ensurePrivateFile(file: string, companions: readonly string[] = []): void {
  if (!existsSync(file)) closeSync(openSync(file, 'a', 0o600));
  if (!posix) return;
  for (const path of [file, ...companions]) {
    if (existsSync(path) && (statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600);
  }
}

/** A key file that other users may read: refused, since whoever read it holds the key. */
export class ExposedKeyFileError extends Error {
  override name = 'ExposedKeyFileError';
}

/**
 * Refuses a key file that group or others may read or write, as ssh refuses a private key with
 * such a mode: the key may already be in other hands, so narrowing it quietly would hide that.
 *
 * @throws {@link ExposedKeyFileError} naming the file, its mode and the fix.
 */
export function assertPrivateKeyFile(file: string): void {
  if (!posix) return;
  const { mode } = statSync(file);
  if ((mode & 0o077) === 0) return;
  throw new ExposedKeyFileError(
    `key file ${file} has mode ${modeText(mode)}: other users may read it. ` +
      `Run \`chmod 600 ${file}\` to start again; if anyone else could have read it, treat the key as ` +
      'compromised and replace it.',
  );
}
