// An agent whose inventory probe never settles and holds nothing open, run as its own process by
// test/e2e/agent-process-faults.test.ts: the event loop empties while run() is pending.
import { Agent } from '../../../edge-agent/agent.js';
import { createLineLogger } from '../../../edge-agent/log.js';

const dataDir = process.argv[2];
if (dataDir === undefined) throw new Error('usage: agent-stuck-probe.ts <data dir>');
const agent = new Agent({
  api: 'http://127.0.0.1:9',
  dataDir,
  region: 'local',
  slots: 1,
  pollWaitSeconds: 1,
  graceSeconds: 0,
  logger: createLineLogger({ json: false }),
  probe: () => new Promise(() => {}),
});
await agent.run();
