import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultRateLimits } from '../functions/domain/security/rate-limit.js';
import { freePort } from '../test/support/processes.js';
import { adminKeyFileName } from './admin-key.js';
import { isLoopbackPeer, type RunningControlPlane, startControlPlane } from './control-plane-server.js';
import { DataDirLockedError, lockDataDir } from './data-dir-lock.js';
import { allowedHosts } from './host-check.js';
import { PortInUseError } from './http-listener.js';

/** A GET with exactly the headers given (fetch would not let a test set Host). */
function get(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'GET', headers }, (res) => {
      let body = '';
      res.on('data', (chunk) => {
        body += String(chunk);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

let cp: RunningControlPlane;
let port: number;
beforeAll(async () => {
  cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir: mkdtempSync(join(tmpdir(), 'gpuai-server-')),
    reaperIntervalMs: 60_000,
    log: () => undefined,
    allowedHosts: ['gpu.lan'],
    // Loopback peers are exempt from the address limits by default; this server counts them so
    // that the socket-address counting below can be tested from this machine.
    exemptLoopback: false,
    settings: { rateLimits: { ...defaultRateLimits, address: { limit: 8, windowSeconds: 3600 } } },
  });
  port = Number(new URL(cp.url).port);
});
afterAll(() => cp.stop());

describe('the embedded server bound to loopback', () => {
  it("answers this machine's names and the allowed ones, and refuses any other Host with 421 (DNS rebinding)", async () => {
    for (const host of [`127.0.0.1:${port}`, `LOCALHOST:${port}`, `[::1]:${port}`, `GPU.lan:${port}`]) {
      expect((await get(`${cp.url}/healthz`, { host })).status, host).toBe(200);
    }
    // A Host without a port means port 80, which this server is not on.
    for (const host of [`attacker.example:${port}`, 'localhost:1', `localhost.attacker.example:${port}`, '127.0.0.1']) {
      const refused = await get(`${cp.url}/healthz`, { host });
      expect(refused.status, host).toBe(421);
      expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'host_not_allowed' } });
    }
  });

  it('counts requests per socket address, whatever X-Forwarded-For claims', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 12; i++) {
      const response = await get(`${cp.url}/healthz`, { host: `127.0.0.1:${port}`, 'x-forwarded-for': `10.9.8.${i}` });
      statuses.push(response.status);
      if (response.status === 429) expect(Number(response.headers['retry-after'])).toBeGreaterThan(0);
    }
    // 4 requests of the test above reached the app from this address; 8 are allowed per hour.
    expect(statuses.filter((s) => s === 200)).toHaveLength(4);
    expect(statuses.slice(4).every((s) => s === 429)).toBe(true);
  });
});

describe('the embedded server by default', () => {
  it('does not count loopback peers per address: local agents and the CLI share 127.0.0.1', async () => {
    const local = await startControlPlane({
      port: 0,
      host: '127.0.0.1',
      dataDir: mkdtempSync(join(tmpdir(), 'gpuai-server-')),
      reaperIntervalMs: 60_000,
      log: () => undefined,
      settings: {
        rateLimits: {
          ...defaultRateLimits,
          address: { limit: 2, windowSeconds: 3600 },
          register: { limit: 1, windowSeconds: 3600 },
        },
      },
    });
    try {
      const host = new URL(local.url).host;
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) statuses.push((await get(`${local.url}/healthz`, { host })).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200]);
      // Nor per address on registration: bad requests, but never 429.
      for (let i = 0; i < 3; i++) {
        const response = await fetch(`${local.url}/v1/nodes`, { method: 'POST', body: '{}' });
        expect(response.status).not.toBe(429);
      }
    } finally {
      await local.stop();
    }
  });
});

describe('the embedded server is the only writer of its store', () => {
  it('counts rate limits in memory, writing no counter to the database (exclusiveStore)', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-server-'));
    const local = await startControlPlane({
      port: 0,
      host: '127.0.0.1',
      dataDir,
      reaperIntervalMs: 60_000,
      log: () => undefined,
      settings: { rateLimits: { ...defaultRateLimits, key: { limit: 3, windowSeconds: 3600 } } },
    });
    try {
      const key = readFileSync(join(dataDir, adminKeyFileName), 'utf8').trim();
      const statuses: number[] = [];
      for (let i = 0; i < 5; i++) {
        const response = await fetch(`${local.url}/v1/jobs`, { headers: { authorization: `Bearer ${key}` } });
        statuses.push(response.status);
      }
      // Counted (the 4th request of the key is refused), yet no RATE# counter in the store: the
      // data-dir lock makes this process the only writer, so nothing needs sharing.
      expect(statuses).toEqual([200, 200, 200, 429, 429]);
      const db = new Database(join(dataDir, 'gpuai.db'), { readonly: true });
      try {
        const counters = db.prepare("SELECT count(*) AS n FROM items WHERE pk LIKE 'RATE#%'").get() as { n: number };
        expect(counters.n).toBe(0);
      } finally {
        db.close();
      }
    } finally {
      await local.stop();
    }
  });
});

describe('isLoopbackPeer', () => {
  it('knows 127.0.0.0/8, ::1 and IPv4-mapped loopback, and nothing else', () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1', '0:0:0:0:0:0:0:1', '::FFFF:127.1.2.3']) {
      expect(isLoopbackPeer(a), a).toBe(true);
    }
    for (const a of ['10.0.0.1', '::ffff:10.0.0.1', '128.0.0.1', '::2', 'fe80::1', '1270.0.0.1', '']) {
      expect(isLoopbackPeer(a), a).toBe(false);
    }
  });
});

describe('allowedHosts', () => {
  it('checks nothing on a non-loopback bind unless names are given, and * turns it off', () => {
    expect(allowedHosts('0.0.0.0', 8787)).toBeUndefined();
    expect(allowedHosts('127.0.0.1', 8787, ['*'])).toBeUndefined();
    expect(allowedHosts('0.0.0.0', 8787, ['gpu.lan'])).toEqual(new Set(['gpu.lan', 'gpu.lan:8787']));
    expect(allowedHosts('127.0.0.1', 80)?.has('localhost')).toBe(true);
    expect(allowedHosts('127.0.0.1', 8787)?.has('localhost')).toBe(false);
  });
});

describe('a start that fails', () => {
  const free = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const probe = createServer();
      probe.once('error', reject);
      probe.listen(port, '127.0.0.1', () => probe.close(() => resolve()));
    });
  const options = (dataDir: string, port = 0) => ({
    port,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs: 60_000,
    log: () => undefined,
  });

  it('on a data dir another control plane holds, names the holder and gives the port back', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-server-'));
    const holder = await startControlPlane(options(dataDir));
    try {
      const port = await freePort();
      await expect(startControlPlane(options(dataDir, port))).rejects.toThrow(
        new DataDirLockedError(dataDir, process.pid),
      );
      await free(port);
    } finally {
      await holder.stop();
    }
    // Stopped, it lets the next one in.
    await (await startControlPlane(options(dataDir))).stop();
  });

  it('half-way (a master key that does not load) closes what it opened: the port and the data dir', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gpuai-server-'));
    writeFileSync(join(dataDir, 'master.key'), 'short', { mode: 0o600 });
    const port = await freePort();
    await expect(startControlPlane(options(dataDir, port))).rejects.toThrow(/master\.key/);
    await free(port);
    lockDataDir(dataDir).release();
  });

  it('on a port already taken, says so and leaves the data dir untouched', async () => {
    const dataDir = join(mkdtempSync(join(tmpdir(), 'gpuai-server-')), 'never');
    const taken = Number(new URL(cp.url).port);
    await expect(startControlPlane(options(dataDir, taken))).rejects.toThrow(new PortInUseError('127.0.0.1', taken));
    expect(existsSync(dataDir)).toBe(false);
  });
});
