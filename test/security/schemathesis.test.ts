import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';
import { repoRoot } from '../support/processes.js';

/**
 * Schemathesis (installed from PyPI into .tools/ by test/security/install.sh) against the served
 * OpenAPI document, with every check on: the control plane served on a loopback port, application
 * routes called with the harness's API key, node routes signed by test/security/schemathesis_hooks.py
 * as the node this test registers. Any finding fails the test with Schemathesis's own report.
 */

const install = join(repoRoot, 'test/security/install.sh');
const schemathesis = join(repoRoot, '.tools/schemathesis/bin/schemathesis');
const hooks = join(repoRoot, 'test/security/schemathesis_hooks.py');
const config = join(repoRoot, 'test/security/schemathesis.toml');

/** Cases per operation and phase: enough to find what it found on main, small enough for a minute or two. */
const maxExamples = 10;
/** A fixed seed, so that a finding reproduces; change it to explore. */
const seed = 20261128;

function ensureInstalled(): void {
  if (spawnSync('bash', [install, '--check']).status === 0) return;
  const run = spawnSync('bash', [install], { encoding: 'utf8' });
  if (run.status !== 0) throw new Error(`test/security/install.sh failed:\n${run.stdout}\n${run.stderr}`);
}

function runSchemathesis(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; output: string }> {
  // Asynchronous on purpose: the server under test answers from this same process.
  return new Promise((done) => {
    // Run from a scratch folder: Schemathesis keeps its state in `.schemathesis/` of its working directory.
    const child = spawn(schemathesis, args, {
      cwd: env.GPUAI_ST_WORKDIR,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('exit', (code) => done({ code, output }));
  });
}

describe('Schemathesis against /openapi.json', () => {
  // Rate limits off (a limit of 0): Schemathesis sends thousands of requests a minute from one key
  // and one node, and a run that mostly meets 429 tests nothing behind it. Limits have their own
  // cases in test/security/abuse-limits.test.ts.
  const off = { limit: 0, windowSeconds: 60 };
  const h = inProcessControlPlane({
    settings: { rateLimits: { address: off, key: off, node: off, register: off, registerGlobal: off } },
  });
  const node = new TestNode(h.request);
  let server: ReturnType<typeof serve>;
  let base = '';
  const reports = mkdtempSync(join(tmpdir(), 'gpuai-schemathesis-'));

  beforeAll(async () => {
    ensureInstalled();
    await h.ready;
    server = serve({ fetch: h.app.fetch, port: 0, hostname: '127.0.0.1' });
    await new Promise<void>((r) => (server.listening ? r() : server.once('listening', () => r())));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    expect((await node.register()).status).toBe(201);
  }, 300_000);

  afterAll(async () => {
    await new Promise((r) => server?.close(r));
    await h.close();
    rmSync(reports, { recursive: true, force: true });
  });

  it('finds nothing with every check on, authenticated', async () => {
    const apiKey = h.adminKey;
    const args = [
      // Every check on: `[checks] enabled = true` in the config file, the file's `--checks all`
      // (which on the command line would override the file's per-operation settings).
      '--config-file',
      config,
      'run',
      `${base}/openapi.json`,
      '--max-examples',
      String(maxExamples),
      '--seed',
      String(seed),
      '--workers',
      '1',
      '--no-shrink',
      '--request-timeout',
      '30',
      '--header',
      `Authorization: Bearer ${apiKey}`,
    ];
    const { code, output } = await runSchemathesis(args, {
      SCHEMATHESIS_HOOKS: hooks,
      GPUAI_ST_NODE_ID: node.id,
      GPUAI_ST_NODE_PUBLIC_KEY: node.key.publicKey,
      GPUAI_ST_NODE_KEY: node.key.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      GPUAI_ST_WORKDIR: reports,
      NO_COLOR: '1',
      COLUMNS: '160',
    });
    if (code !== 0) {
      // The whole report, for reading beyond the end that the failure message shows.
      const saved = join(tmpdir(), 'gpuai-schemathesis-last.log');
      writeFileSync(saved, output);
      expect.fail(`schemathesis exited ${code} (whole output in ${saved}):\n${output.slice(-30_000)}`);
    }
    expect(output).toMatch(/passed|No issues found/i);
  }, 600_000);
});
