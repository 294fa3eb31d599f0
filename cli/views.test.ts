import { describe, expect, it } from 'vitest';
import type { JobView, JobWithTasks } from '../protocol/job.js';
import type { NodeView } from '../protocol/node.js';
import { createStyle, escapeControl, stripColours } from './format.js';
import { renderJob, renderJobList, renderNode, renderNodeList } from './views.js';

const now = Date.parse('2026-11-25T12:00:00Z');
// biome-ignore lint/suspicious/noControlCharactersInRegex: the test looks for exactly these.
const anyControl = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

const job = (name: string): JobWithTasks => ({
  id: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
  status: 'failed',
  spec: {
    name,
    command: ['sh', '-c', 'printf "\u001b[2J"'],
    env: {},
    resources: { gpus: { count: 0 } },
    workload: 'batch',
    tasks: 1,
    retries: 0,
    timeoutSeconds: 60,
    verification: { mode: 'none' },
  },
  taskCounts: { queued: 0, assigned: 0, running: 0, reported: 0, verified: 0, failed: 1, cancelled: 0 },
  createdAt: '2026-11-25T11:59:00Z',
  updatedAt: '2026-11-25T11:59:30Z',
  tasks: [
    {
      id: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.0',
      jobId: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K',
      index: 0,
      state: 'failed',
      attempt: 1,
      maxAttempts: 1,
      error: { code: 'task_failed', message: 'node says \u001b]0;owned\u0007 \u009b2J' },
      attempts: [],
      queuedAt: '2026-11-25T11:59:00Z',
      updatedAt: '2026-11-25T11:59:30Z',
    },
  ],
});

describe('text from the API reaches the terminal with its control characters escaped', () => {
  it('in `jobs list`: an old job named with escape codes shows them as text', () => {
    // Stored before the API refused such names, or written by another client of the API.
    const out = renderJobList([job('\u001b[2J\u001b]0;pwned\u0007x') as JobView], createStyle(false), now);
    expect(out).not.toMatch(anyControl);
    expect(out).toContain('\\x1b[2J\\x1b]0;pwned\\x07x');
  });

  it("in `jobs get`, task errors included, and with colours on only the CLI's own escapes remain", () => {
    const out = renderJob(job('evil\u202etxt.exe'), createStyle(true), now);
    const withoutOwnColours = stripColours(out);
    expect(withoutOwnColours).not.toMatch(anyControl);
    expect(out).toContain('evil\\u202etxt.exe');
    expect(out).toContain('node says \\x1b]0;owned\\x07 \\x9b2J');
  });

  it('in `nodes list`: a node names itself', () => {
    const node = {
      id: 'node_aaaaaaaaaaaaaaaaaaaaaaaaaa',
      name: 'gpu\u001b[31m-box',
      inventory: { region: 'local', gpus: [] },
      status: 'live',
      stats: { tasksCompleted: 0, tasksFailed: 0, leasesLost: 0 },
      lastSeenAt: '2026-11-25T11:59:59Z',
    } as unknown as NodeView;
    const out = renderNodeList([node], createStyle(false), now);
    expect(out).not.toMatch(anyControl);
    expect(out).toContain('gpu\\x1b[31m-box');
  });

  it('escapeControl keeps what it is told to keep (log tails keep lines and tabs)', () => {
    expect(escapeControl('a\tb\nc\r\u001b[1m', '\n\t')).toBe('a\tb\nc\\x0d\\x1b[1m');
    expect(escapeControl('a\nb')).toBe('a\\x0ab');
  });
});

describe('node detail', () => {
  it('shows the attestation level and until when it holds, or none', () => {
    const node = {
      id: 'node_aaaaaaaaaaaaaaaaaaaaaaaaaa',
      name: 'box',
      publicKey: 'k',
      agentVersion: '0.1.0',
      inventory: {
        region: 'local',
        gpus: [],
        cpu: { model: 'cpu', cores: 2 },
        memoryMiB: 1024,
        os: 'linux',
        arch: 'x64',
        runtimes: ['process'],
      },
      pools: [],
      status: 'live',
      stats: { tasksCompleted: 0, tasksFailed: 0, leasesLost: 0 },
      registeredAt: '2026-11-25T11:00:00Z',
      lastSeenAt: '2026-11-25T11:59:59Z',
    } as unknown as NodeView;
    const attested = { ...node, attestation: { level: 'tpm', expiresAt: '2026-11-25T13:00:00.000Z' } } as NodeView;
    expect(renderNode(attested, createStyle(false), now)).toMatch(/attestation\s+tpm until 2026-11-25T13:00:00.000Z/);
    expect(renderNode(node, createStyle(false), now)).toMatch(/attestation\s+none/);
  });
});
