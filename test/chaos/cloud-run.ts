import type { ChaosReport } from './report.js';
import type { RunOptions } from './run-core.js';

export async function runCloudChaos(_options: RunOptions): Promise<ChaosReport> {
  throw new Error('the cloud chaos run is not built yet');
}
