import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { NodeView } from '../../protocol/index.js';
import {
  Api,
  adminKeyOf,
  fastTimings,
  freePort,
  Proc,
  repoRoot,
  runCli,
  startAgent,
  tempDir,
  waitFor,
} from '../support/processes.js';

/**
 * The README's "a second agent joins": `gpuai start` enrolls its own agent by itself (operator
 * `local`); another agent is refused until it presents a token made with `gpuai tokens create`.
 */

const dir = tempDir('enrollment');
const dataDir = join(dir.path, 'state');
const procs: Proc[] = [];
// The deployment's default enrollment (`token`), whatever the shell running the tests set.
const { GPUAI_ENROLLMENT: _enrollment, GPUAI_JOIN_TOKEN: _token, ...inheritedEnv } = process.env;

afterAll(async () => {
  await Promise.all(procs.map((p) => p.kill('SIGKILL')));
  dir.remove();
});

describe('enrollment on the embedded control plane', () => {
  it('enrolls the launcher’s agent by itself, refuses a stranger, and admits an agent with a CLI-made token', async () => {
    const port = await freePort();
    const start = new Proc(
      spawn(
        process.execPath,
        [join(repoRoot, 'bin', 'gpuai.js'), 'start', '--port', String(port), '--data-dir', dataDir],
        {
          env: { ...inheritedEnv, ...fastTimings },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      ),
    );
    procs.push(start);
    const api = new Api(`http://127.0.0.1:${port}`, () => adminKeyOf(dataDir));
    const operators = async () => {
      const r = await fetch(`${api.url}/v1/nodes`, { headers: { authorization: `Bearer ${adminKeyOf(dataDir)}` } });
      return ((await r.json()) as { nodes: NodeView[] }).nodes.map((n) => n.operator).sort();
    };
    await waitFor('the local agent', async () => ((await api.liveNodes()) === 1 ? true : undefined), 60_000).catch(
      (error) => {
        throw new Error(`${error}\n${start.tail()}`);
      },
    );
    expect(await operators()).toEqual(['local']);
    expect(start.tail()).not.toMatch(/jt_[0-9A-Z]{26}\.[A-Za-z0-9_-]{43}/); // the token is never logged

    const stranger = startAgent(api.url, join(dir.path, 'stranger'), 'stranger', { GPUAI_JOIN_TOKEN: '' });
    procs.push(stranger);
    expect((await stranger.exited).code).toBe(1);
    expect(stranger.tail()).toContain('registration refused');
    expect(stranger.tail()).toContain('join_token_required');

    const env = { GPUAI_API: api.url, GPUAI_DATA_DIR: dataDir };
    const created = await runCli(['tokens', 'create', '--operator', 'me', '--pools', 'local/*'], env);
    expect(created.code).toBe(0);
    const token = created.stdout.trim();
    const second = startAgent(api.url, join(dir.path, 'second'), 'second', { GPUAI_JOIN_TOKEN: token });
    procs.push(second);
    await waitFor('the second agent', async () => ((await api.liveNodes()) === 2 ? true : undefined), 60_000);
    expect(await operators()).toEqual(['local', 'me']);
  }, 120_000);
});
