import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { digestBundle, digestConfig, measureAgent } from './measure.js';

describe('agent measurement', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    await Promise.all(dirs.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });

  async function bundle(files: Record<string, string>) {
    const dir = await mkdtemp(join(tmpdir(), 'gpuai-measure-'));
    dirs.push(dir);
    const root = join(dir, 'agent');
    for (const [path, text] of Object.entries(files)) {
      await mkdir(join(root, path, '..'), { recursive: true });
      await writeFile(join(root, path), text);
    }
    return root;
  }

  it('changes when a file changes, is added or renamed; ignores tests and a missing root', async () => {
    const a = await bundle({ 'main.ts': 'run()', 'lib/x.ts': 'x', 'main.test.ts': 't1' });
    const b = await bundle({ 'main.ts': 'run()', 'lib/x.ts': 'x', 'main.test.ts': 't2', 'test-support/h.ts': 'h' });
    const changed = await bundle({ 'main.ts': 'run();', 'lib/x.ts': 'x' });
    const added = await bundle({ 'main.ts': 'run()', 'lib/x.ts': 'x', 'lib/y.ts': '' });
    const renamed = await bundle({ 'main.ts': 'run()', 'lib/z.ts': 'x' });
    const digest = await digestBundle([a, join(a, '..', 'missing')]);
    expect(digest.files).toBe(2);
    expect((await digestBundle([b])).sha256).toBe(digest.sha256);
    for (const other of [changed, added, renamed]) expect((await digestBundle([other])).sha256).not.toBe(digest.sha256);
    await expect(digestBundle([join(a, 'nothing-here')])).rejects.toThrow(/no agent files/);
  });

  it('measures this agent: its version, its bundle and the canonical config', async () => {
    const m = await measureAgent({ b: 1, a: [2] });
    expect(m.type).toBe('agent-measurement');
    expect(m.files).toBeGreaterThan(10);
    expect(m.configSha256).toBe(digestConfig({ a: [2], b: 1 }));
    expect(m.configSha256).not.toBe(digestConfig({ a: [2], b: 2 }));
  });
});
