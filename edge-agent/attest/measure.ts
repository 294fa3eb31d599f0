import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative, resolve, sep } from 'node:path';
import { canonicalJson, type MeasurementEvidence } from '../../protocol/index.js';
import { agentVersion } from '../version.js';

/** The agent's code: this folder's parent (edge-agent/) and the protocol it speaks. */
const agentRoot = resolve(import.meta.dirname, '..');
export const defaultBundleRoots = [agentRoot, resolve(agentRoot, '..', 'protocol')];

/** Files that are not part of what runs: tests and their helpers. */
const excluded = (path: string) =>
  /\.test\.[cm]?[jt]s$/.test(path) ||
  path.split(sep).some((part) => part === 'test-support' || part === 'node_modules');

export interface BundleDigest {
  sha256: string;
  files: number;
}

/**
 * sha-256 over every file of the agent bundle, sorted by path relative to the roots' common
 * parent, one `<path>\0<sha-256 hex>\n` line each: a change to any file, or a file added or
 * removed, changes the digest. Source (.ts) when the agent runs from source (tsx), built files
 * when it runs from a build.
 */
export async function digestBundle(roots: readonly string[] = defaultBundleRoots): Promise<BundleDigest> {
  const base = resolve(roots[0] ?? agentRoot, '..');
  const files: string[] = [];
  for (const root of roots) {
    try {
      await collect(root, files);
    } catch (error) {
      // A build that bundles protocol/ into the agent has no such folder beside it.
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
  }
  if (files.length === 0) throw new Error(`no agent files found under ${roots.join(', ')}`);
  const lines = await Promise.all(
    files.map(async (file) => {
      const digest = createHash('sha256')
        .update(await readFile(file))
        .digest('hex');
      return `${relative(base, file).split(sep).join('/')}\0${digest}\n`;
    }),
  );
  lines.sort();
  const hash = createHash('sha256');
  for (const line of lines) hash.update(line);
  return { sha256: hash.digest('hex'), files: lines.length };
}

async function collect(dir: string, into: string[]): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (excluded(path)) continue;
    if (entry.isDirectory()) await collect(path, into);
    else if (entry.isFile()) into.push(path);
  }
}

/** sha-256 of the canonical JSON of the effective configuration (no secrets belong in it). */
export const digestConfig = (config: unknown): string =>
  createHash('sha256').update(canonicalJson(config)).digest('hex');

/** The `agent-measurement` evidence for this agent and `config`. */
export async function measureAgent(config: unknown, roots?: readonly string[]): Promise<MeasurementEvidence> {
  const bundle = await digestBundle(roots);
  return {
    type: 'agent-measurement',
    agentVersion,
    bundleSha256: bundle.sha256,
    configSha256: digestConfig(config),
    files: bundle.files,
  };
}
