/**
 * The server side of bench:dispatch, run in its own process so that its CPU time (and, with
 * `--profile`, its CPU profile) is the control plane's alone, apart from the simulated agents.
 *
 * Serves two things on loopback, both on @hono/node-server behind embedded/http-listener.ts:
 * - the real embedded control plane (embedded/control-plane-server.ts: SQLite in a temp data dir,
 *   queue workers, reaper, Host check), with open enrollment and the per-node, per-key and
 *   registration rate limits off (the bench's agents are far past what one real node sends), or,
 *   with `--count-limits`, the per-node and per-key ones counting at a limit never reached;
 * - a bare hono route (`GET /bare`), the HTTP stack's own limit to compare the control plane with.
 *
 * Talks to the parent over IPC: sends `{ ready, url, bareUrl, adminKey }`, answers `cpu` with its
 * process.cpuUsage(), profiles its CPU between `profile` and `profiled` (written to the file
 * named), and on `stop` shuts both down and exits.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Hono } from 'hono';
import { startControlPlane } from '../../embedded/control-plane-server.js';
import { close, listen } from '../../embedded/http-listener.js';
import { defaultRateLimits } from '../../functions/domain/security/rate-limit.js';

export type ServerMessage =
  | { ready: true; url: string; bareUrl: string; adminKey: string }
  | { cpu: { user: number; system: number } }
  | { profiled: string }
  | { stopped: true };
export type ParentMessage = { cmd: 'cpu' } | { cmd: 'profile' } | { cmd: 'profiled'; file: string } | { cmd: 'stop' };

/**
 * The V8 CPU profiler of this process, started and stopped around one phase of the bench, so that
 * the profile holds that phase only (not start-up, not the bare route's phase).
 */
function profiler() {
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object) =>
    new Promise<unknown>((resolve, reject) =>
      session.post(method, params, (error, result) => (error ? reject(error) : resolve(result))),
    );
  return {
    async start() {
      await post('Profiler.enable');
      await post('Profiler.setSamplingInterval', { interval: 200 });
      await post('Profiler.start');
    },
    async stop(file: string) {
      const { profile } = (await post('Profiler.stop')) as { profile: unknown };
      writeFileSync(file, JSON.stringify(profile));
    },
  };
}

const off = { limit: 0, windowSeconds: 60 };
/** `BENCH_COUNT_LIMITS=1`: the per-node and per-key scopes count every request, at a limit never reached. */
const counted = { limit: 1_000_000_000, windowSeconds: 60 };

async function main(): Promise<void> {
  const send = (message: ServerMessage) => process.send?.(message);
  const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-bench-dispatch-'));
  const reaperIntervalMs = Number(process.env.BENCH_REAPER_MS ?? 1000);
  const cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs,
    settings: {
      enrollment: 'open',
      rateLimits: {
        ...defaultRateLimits,
        ...(process.env.BENCH_COUNT_LIMITS === '1' ? { key: counted, node: counted } : { key: off, node: off }),
        register: off,
        registerGlobal: off,
      },
    },
    log: () => undefined,
  });
  const bare = new Hono().get('/bare', (c) => c.json({ ok: true }));
  const bareServer = await listen('127.0.0.1', 0);
  bareServer.ready(bare.fetch);
  const barePort = (bareServer.server.address() as AddressInfo).port;
  const adminKey = readFileSync(join(dataDir, 'admin-key'), 'utf8').trim();

  const profile = profiler();
  process.on('message', (message: ParentMessage) => {
    if (message.cmd === 'cpu') send({ cpu: process.cpuUsage() });
    if (message.cmd === 'profile') void profile.start();
    if (message.cmd === 'profiled') void profile.stop(message.file).then(() => send({ profiled: message.file }));
    if (message.cmd === 'stop') {
      void (async () => {
        await close(bareServer.server);
        await cp.stop();
        rmSync(dataDir, { recursive: true, force: true });
        send({ stopped: true });
        process.exit(0);
      })();
    }
  });
  // An orphan (the bench was killed) must not keep serving.
  process.on('disconnect', () => process.exit(0));
  send({ ready: true, url: cp.url, bareUrl: `http://127.0.0.1:${barePort}/bare`, adminKey });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
