import { type RunningControlPlane, startControlPlane } from '../../embedded/control-plane-server.js';
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';
import { Api, adminKeyOf, tempDir } from './processes.js';

/** Teardown steps a test collects and runs in reverse order after it. */
export type Cleanups = (() => Promise<unknown> | unknown)[];

export interface ServedControlPlane {
  cp: RunningControlPlane;
  /** The URL agents use: the fault proxy's, in front of the control plane. */
  url: string;
  proxy: FaultProxy;
  /** The admin API, straight to the control plane (the proxy's faults do not touch it). */
  api: Api;
}

/**
 * The embedded control plane served in this process on a free port (open enrollment, a reaper every
 * 200 ms, quiet), with the fault proxy in front, for tests that run real agents against it. What
 * tears it down goes into `cleanups`.
 */
export async function servedControlPlane(cleanups: Cleanups, name: string): Promise<ServedControlPlane> {
  const dataDir = tempDir(`${name}-cp`);
  cleanups.push(dataDir.remove);
  const cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir: dataDir.path,
    reaperIntervalMs: 200,
    settings: { enrollment: 'open' },
    log: () => undefined,
  });
  cleanups.push(() => cp.stop());
  const proxy = await startFaultProxy(cp.url);
  cleanups.push(() => proxy.close());
  return { cp, url: proxy.url, proxy, api: new Api(cp.url, () => adminKeyOf(dataDir.path)) };
}
