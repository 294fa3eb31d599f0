#!/usr/bin/env node
// Runs the TypeScript edge agent through tsx's loader, so the repository needs no build step.
import { mkdirSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';

// tsx keeps its compile cache in <tmp>/tsx-<euid> and throws while loading the agent when it cannot
// make that dir (a full disk, a TMPDIR it cannot write: the chaos run's disk-full agent never
// started again). Without it the agent still runs, uncached; its tasks then get released, not failed.
try {
  mkdirSync(join(tmpdir(), `tsx-${process.geteuid ? process.geteuid() : userInfo().username}`), { recursive: true });
} catch {
  process.env.TSX_DISABLE_CACHE = '1';
}
const { register } = await import('tsx/esm/api');
register();
await import('../edge-agent/main.ts');
