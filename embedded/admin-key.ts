import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { UnauthenticatedError } from '../functions/domain/errors.js';
import type { ApiKeys } from '../functions/domain/security/api-keys.js';
import { hasScope } from '../functions/domain/security/api-keys.js';
import type { Log } from './log.js';

/** Where the embedded deployment keeps its admin key; the CLI looks here by default (cli/credentials.ts). */
export const adminKeyFileName = 'admin-key';

/** The admin key's tenant: jobs submitted before API keys existed belong to it. */
export const embeddedAdminTenant = 'default';

/**
 * Makes sure `<dataDir>/admin-key` (mode 0600) holds a working admin key of tenant `default`, so
 * that `npm start` stays a one-command start and the CLI on the same machine needs no setup.
 *
 * A valid key is never replaced, so a restart keeps it. A file whose key the store refuses (the
 * database was deleted, the key was revoked or expired) is replaced by a new key: whoever can
 * restart the control plane owns its data dir anyway. The secret is never logged, only the path.
 */
export async function ensureAdminKey(
  apiKeys: ApiKeys,
  dataDir: string,
  log: Log,
): Promise<{ file: string; created: boolean }> {
  const file = join(dataDir, adminKeyFileName);
  const existing = readKey(file);
  let reason = 'first start';
  if (existing !== undefined) {
    try {
      const principal = await apiKeys.authenticate(existing);
      if (hasScope(principal, 'admin')) {
        if ((statSync(file).mode & 0o077) !== 0) {
          chmodSync(file, 0o600);
          log({ level: 'warn', msg: 'admin key file was readable by others; made it 0600', file });
        }
        log({ msg: 'admin API key', file, keyId: principal.keyId });
        return { file, created: false };
      }
      reason = 'the key in the file is not an admin key';
    } catch (error) {
      if (!(error instanceof UnauthenticatedError)) throw error;
      reason = `the key in the file was refused (${error.code})`;
    }
  }
  const created = await apiKeys.create({
    tenant: embeddedAdminTenant,
    scopes: ['admin', 'submit', 'read'],
    name: 'embedded admin key',
  });
  writeSecretFile(file, `${created.key}\n`);
  log({ msg: 'created an admin API key', file, keyId: created.id, reason });
  return { file, created: true };
}

function readKey(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** Writes a 0600 temporary file, syncs it and renames it over `file`: never a partial or readable key. */
function writeSecretFile(file: string, text: string): void {
  const temporary = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(temporary, 'wx', 0o600);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, file);
}
