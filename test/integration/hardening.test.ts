import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { signatureHeaders, signRequest } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';

/** Review findings on input the API accepted and should not have (issue 15). */
type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;
beforeEach(() => {
  h = inProcessControlPlane();
});
afterEach(async () => {
  await h.close();
});

const submit = (body: unknown) =>
  h.api('/v1/jobs', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

async function expectRefused(response: Response, status: number, code: string, path?: string) {
  expect(response.status).toBe(status);
  const body = (await response.json()) as { error: { code: string; details?: { issues?: { path: string }[] } } };
  expect(body.error.code).toBe(code);
  if (path !== undefined) expect(body.error.details?.issues?.map((i) => i.path)).toContain(path);
}

describe('job specs a node could never run, or a terminal should never print', () => {
  it('refuses a NUL in the command, its arguments or an env value with 400, writing nothing', async () => {
    await h.ready;
    const before = h.snapshot();
    await expectRefused(await submit({ command: ['echo\u0000'] }), 400, 'validation_failed', 'command.0');
    await expectRefused(
      await submit({ command: ['sh', '-c', 'echo a\u0000b'] }),
      400,
      'validation_failed',
      'command.2',
    );
    await expectRefused(
      await submit({ command: ['true'], env: { TOKEN: 'x\u0000y' } }),
      400,
      'validation_failed',
      'env.TOKEN',
    );
    expect(h.snapshot()).toEqual(before);
    // Other control characters are fine in arguments: a newline in `sh -c` is a script.
    expect((await submit({ command: ['sh', '-c', 'echo a\necho b\t'] })).status).toBe(201);
  });

  it('refuses terminal escapes and bidirectional overrides in a job name, writing nothing', async () => {
    await h.ready;
    const before = h.snapshot();
    for (const name of ['\u001b]0;pwned\u0007', 'a\u001b[2Jb', 'tab\there', 'c1\u009b31m', 'evil\u202etxt.exe']) {
      await expectRefused(await submit({ command: ['true'], name }), 400, 'validation_failed', 'name');
    }
    expect(h.snapshot()).toEqual(before);
    expect((await submit({ command: ['true'], name: 'résumé · 训练 run-1' })).status).toBe(201);
  });
});

describe('signed requests', () => {
  it('refuses a date header that is not plain decimal digits, though its number is in the window', async () => {
    const node = new TestNode(h.request);
    expect((await node.register()).status).toBe(201);
    const path = `/v1/nodes/${node.id}/heartbeat`;
    const body = JSON.stringify({ tasks: [] });
    const send = (respell: (ms: string) => string) => {
      // A genuine signature over the canonical date; only the header's spelling of the date changes.
      const headers = signRequest(node.key, node.id, { method: 'POST', pathWithQuery: path, body });
      headers[signatureHeaders.date] = respell(headers[signatureHeaders.date] ?? '');
      return h.request(path, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    };
    const before = h.snapshot();
    for (const respell of [
      (ms: string) => `${ms}.0`,
      (ms: string) => `+${ms}`,
      (ms: string) => `${ms}.000`,
      (ms: string) => `${Number(ms) / 1000}e3`,
      (ms: string) => `0${ms}`.padStart(20, '0'),
    ]) {
      const response = await send(respell);
      expect(response.status).toBe(401);
      expect(((await response.json()) as { error: { message: string } }).error.message).toContain('decimal digits');
    }
    expect(h.snapshot()).toEqual(before);
    expect((await send((ms) => ms)).status).toBe(200);
  });
});
