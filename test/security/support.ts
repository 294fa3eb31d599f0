import { expect } from 'vitest';
import type { JobWithTasks } from '../../protocol/index.js';
import { type inProcessControlPlane, TestNode } from '../support/in-process.js';

/**
 * Shared by the security suite: every case asserts the answer (status, the one error shape, no
 * stack trace) and that the stored state did not change. `snapshot()` is every stored item but
 * nonces and rate-limit counters, which a refused request may legitimately spend.
 */
export type Harness = ReturnType<typeof inProcessControlPlane>;

export interface Refusal {
  error: { code: string; message: string; details?: unknown; requestId?: string };
}

/** Asserts a refusal: the status, the one error shape, optionally its code, never a stack trace. */
export async function expectRefused(response: Response, status: number, code?: string | RegExp): Promise<Refusal> {
  const text = await response.text();
  expect(response.status, text).toBe(status);
  const body = JSON.parse(text) as Refusal;
  expect(typeof body.error?.code, text).toBe('string');
  expect(typeof body.error?.message, text).toBe('string');
  if (typeof code === 'string') expect(body.error.code, text).toBe(code);
  else if (code !== undefined) expect(body.error.code, text).toMatch(code);
  expect(text).not.toMatch(/\bat [^\s]+\.(ts|js):\d+|node_modules|Error: /);
  return body;
}

/** Runs `act` and asserts that no stored item (but nonces and rate counters) changed. */
export async function unchanged<T>(h: Harness, act: () => Promise<T>): Promise<T> {
  const before = h.snapshot();
  const result = await act();
  expect(h.snapshot()).toEqual(before);
  return result;
}

export const jsonInit = (method: string, body: unknown, headers: Record<string, string> = {}): RequestInit => ({
  method,
  headers: { 'content-type': 'application/json', ...headers },
  body: typeof body === 'string' ? body : JSON.stringify(body),
});

/** Submits a job as the harness admin (or with `key`) and returns it. */
export async function submitJob(h: Harness, spec: Record<string, unknown> = { command: ['true'] }, key?: string) {
  const response = await h.api('/v1/jobs', jsonInit('POST', spec), key);
  const text = await response.text();
  expect(response.status, text).toBe(201);
  return JSON.parse(text) as JobWithTasks;
}

/** Registers `node` (a new one by default), submits a one-task job and binds it to the node. */
export async function assignedTask(h: Harness, node = new TestNode(h.request)) {
  const registered = await node.register();
  expect([200, 201], await registered.clone().text()).toContain(registered.status);
  const job = await submitJob(h);
  await h.cp.scheduler.schedule({ jobId: job.id });
  const work = await node.poll(0);
  expect(work.status, await work.clone().text()).toBe(200);
  const { assignment } = (await work.json()) as { assignment: { taskId: string; attempt: number; jobId: string } };
  return { node, job, assignment };
}
