import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { OutputEntry } from '../../protocol/index.js';

/** sha-256 and size of a byte stream, fed chunk by chunk (a task's stdout, which may be large). */
export class StreamDigest {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;

  update(chunk: Buffer): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }

  /** Finishes the digest; call once. */
  result(): Pick<OutputEntry, 'sha256' | 'bytes'> {
    return { sha256: this.hash.digest('hex'), bytes: this.bytes };
  }
}

/**
 * Hashes every regular file under `dir`, recursively, named by its path relative to `dir` with `/`
 * separators whatever the OS. Symbolic links are not followed: a task could otherwise point one at
 * a file of the host and have its contents hashed and reported.
 */
export async function digestOutputFiles(dir: string): Promise<OutputEntry[]> {
  const entries: OutputEntry[] = [];
  const walk = async (path: string, prefix: string): Promise<void> => {
    for (const dirent of await readdir(path, { withFileTypes: true })) {
      const name = `${prefix}${dirent.name}`;
      if (dirent.isDirectory()) await walk(join(path, dirent.name), `${name}/`);
      else if (dirent.isFile()) entries.push({ name, ...(await digestFile(join(path, dirent.name))) });
    }
  };
  await walk(dir, '');
  return entries;
}

/** Orders outputs by name, in the byte order the result-hash manifest uses, so reports read the same everywhere. */
export function byName(a: OutputEntry, b: OutputEntry): number {
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

async function digestFile(path: string): Promise<Pick<OutputEntry, 'sha256' | 'bytes'>> {
  const digest = new StreamDigest();
  for await (const chunk of createReadStream(path)) digest.update(chunk as Buffer);
  return digest.result();
}
