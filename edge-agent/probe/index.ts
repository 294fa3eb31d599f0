import { NodeInventory, type Runtime } from '../../protocol/index.js';
import { probeAmd } from './amd.js';
import { type CommandRunner, runCommand } from './command.js';
import { probeHost } from './host.js';
import { probeNvidia } from './nvidia.js';

export type { CommandOutcome, CommandRunner } from './command.js';

export interface ProbeOptions {
  region: string;
  runtimes: readonly Runtime[];
  /** Runs the vendor tools; tests pass one that replays captures. */
  run?: CommandRunner;
}

/** The inventory to register, and what could not be detected (a vendor tool that failed, odd rows). */
export interface ProbeReport {
  inventory: NodeInventory;
  warnings: string[];
}

/**
 * Detects this host's inventory. A missing vendor tool means no GPUs of that vendor; a failing one
 * adds a warning. Nothing here throws for hardware reasons: a node without GPUs is still a node.
 */
export async function probeInventory(options: ProbeOptions): Promise<ProbeReport> {
  const run = options.run ?? runCommand;
  const [nvidia, amd] = await Promise.all([probeNvidia(run), probeAmd(run)]);
  const inventory = NodeInventory.parse({
    ...probeHost(),
    // The protocol caps a node at 64 devices; no real host comes near it.
    gpus: [...nvidia.gpus, ...amd.gpus].slice(0, 64),
    runtimes: [...options.runtimes],
    region: options.region,
  });
  return { inventory, warnings: [...nvidia.warnings, ...amd.warnings] };
}
