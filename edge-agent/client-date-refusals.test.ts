import { afterEach, describe, expect, it } from 'vitest';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey } from '../protocol/index.js';
import { AgentHarness } from '../test/support/agent-harness.js';
import { ControlPlaneClient } from './client.js';
import { NodeNotRegisteredError, RequestDateRefusedError, RequestRejectedError } from './errors.js';
import { testProbe } from './test-support/fixtures.js';

/**
 * A 401 that refuses a request's date (`replayed_request`, `stale_request`) is not "unknown node":
 * the node's signature verified. Before, the client typed every 401 as NodeNotRegisteredError, so
 * two progress reports that crossed on the way made the agent register again, with a WARN.
 */
let harness: AgentHarness | undefined;

afterEach(async () => {
  await harness?.stop();
  harness = undefined;
});

async function registered() {
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-dates-' });
  const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
  const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
  const client = new ControlPlaneClient({ api: harness.url, nodeId, keyPair, backoff: { initialMs: 5, maxMs: 20 } });
  const { inventory } = await testProbe();
  await client.register({ publicKey: keyPair.publicKey, agentVersion: '0.0.0-test', inventory });
  return { client, h: harness };
}

const until = async (done: () => boolean) => {
  while (!done()) await new Promise((r) => setTimeout(r, 5));
};

describe('401 date refusals', { timeout: 60_000 }, () => {
  it('two progress reports that cross on the way: the late one is signed again above the watermark, the node is not re-registered', async () => {
    const { client, h } = await registered();
    const job = await h.submit({ command: ['true'] });
    const assignment = await client.pollWork(5);
    expect(assignment?.jobId).toBe(job.id);
    const taskId = assignment?.taskId ?? '';
    const progress = () => h.sent('POST', '/progress');
    // The first report is held back on the way; the second, signed later, and a heartbeat after it
    // (so that this client has signed past the second's date) are taken first.
    h.proxy.delayMs = 1500;
    const late = client.reportProgress(taskId, { attempt: 1, percent: 10 }).catch((e: unknown) => e);
    await until(() => progress().length === 1);
    h.proxy.delayMs = 0;
    await client.reportProgress(taskId, { attempt: 1, percent: 20 });
    await client.heartbeat({ tasks: [{ taskId, attempt: 1 }] });
    const registrations = h.sent('POST', '/v1/nodes').length;
    const outcome = await late;
    expect(outcome).not.toBeInstanceOf(Error);
    // In arrival order at the proxy: the held report (refused as replayed when it reached the server,
    // which had taken a later date), the second report, and the held one signed again and taken.
    expect(progress().map((r) => r.status)).toEqual([401, 200, 200]);
    expect(h.sent('POST', '/v1/nodes').length).toBe(registrations);
  });

  it('types replayed_request and stale_request as date refusals, not as an unknown node', async () => {
    const { client, h } = await registered();
    // A replay without the watermark (a nonce seen before): not sent again, since a copy may have been taken.
    h.proxy.failNext(1, 401, { error: { code: 'replayed_request', message: 'this nonce was already used' } });
    const replayed = await client.heartbeat({ tasks: [] }).catch((e: unknown) => e);
    expect(replayed).toBeInstanceOf(RequestDateRefusedError);
    expect(replayed).not.toBeInstanceOf(NodeNotRegisteredError);
    expect(replayed).not.toBeInstanceOf(RequestRejectedError);
    expect(replayed).toMatchObject({ status: 401, code: 'replayed_request', retryable: false });
    // What the server answers a node whose clock is off by more than the accepted skew.
    h.proxy.failNext(1, 401, { error: { code: 'stale_request', message: 'request date is more than 300 s off' } });
    const stale = await client.heartbeat({ tasks: [] }).catch((e: unknown) => e);
    expect(stale).toBeInstanceOf(RequestDateRefusedError);
    expect(stale).toMatchObject({ status: 401, code: 'stale_request', retryable: false });
    // Any other 401 is still an unknown node.
    h.proxy.failNext(1, 401, { error: { code: 'unauthenticated', message: 'no such node' } });
    expect(await client.heartbeat({ tasks: [] }).catch((e: unknown) => e)).toBeInstanceOf(NodeNotRegisteredError);
  });
});
