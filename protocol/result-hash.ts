import { sha256Hex } from './signing.js';

/** One hashed output of a task: its standard output is named `stdout`, files keep their relative paths. */
export interface OutputEntry {
  name: string;
  sha256: string;
  bytes: number;
}

/**
 * The result hash of a task: sha-256 over a manifest of its outputs, one line per output in
 * byte order of names, `<sha256 hex> <bytes> <name>\n` (like `sha256sum`, with sizes). Two
 * honest nodes that produce the same outputs produce the same hash, whatever order they list them in.
 *
 * @example
 * resultHash([{ name: 'stdout', sha256: sha256Hex('hello\n'), bytes: 6 }])
 */
export function resultHash(outputs: readonly OutputEntry[]): string {
  const lines = [...outputs]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((o) => `${o.sha256} ${o.bytes} ${o.name}\n`)
    .join('');
  return sha256Hex(lines);
}
