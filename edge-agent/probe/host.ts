import os from 'node:os';
import type { NodeInventory } from '../../protocol/index.js';

/** The host part of the inventory: everything but the GPUs, runtimes and region. */
export type HostInventory = Pick<NodeInventory, 'cpu' | 'memoryMiB' | 'os' | 'osVersion' | 'arch'>;

/** Reads CPU, memory, OS and architecture from node:os. */
export function probeHost(): HostInventory {
  const cpus = os.cpus();
  return {
    cpu: {
      model: (cpus[0]?.model.trim() || 'unknown').slice(0, 128),
      // os.cpus() is empty on some sandboxed hosts; availableParallelism() still answers there.
      cores: Math.max(1, cpus.length || os.availableParallelism()),
    },
    memoryMiB: Math.max(1, Math.floor(os.totalmem() / (1024 * 1024))),
    os: osFamily(process.platform),
    osVersion: `${os.type()} ${os.release()}`.slice(0, 128),
    arch: process.arch === 'x64' || process.arch === 'arm64' ? process.arch : 'other',
  };
}

function osFamily(platform: NodeJS.Platform): NodeInventory['os'] {
  if (platform === 'linux' || platform === 'darwin') return platform;
  if (platform === 'win32') return 'windows';
  return 'other';
}
