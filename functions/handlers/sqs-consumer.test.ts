import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ContentionError, NotFoundError } from '../domain/errors.js';

/** What the consumer calls: the scheduler's `schedule` and the queue's `send`. */
const schedule = vi.fn<(message: { jobId: string }) => Promise<number>>();
const send = vi.fn<(queue: string, body: string) => Promise<string>>();

vi.mock('./config.js', () => ({
  cloudDeployment: () => ({ cp: { scheduler: { schedule } }, ports: { queue: { send } } }),
}));

// The failure log lines are the middleware's, not what these tests check.
vi.stubEnv('POWERTOOLS_LOG_LEVEL', 'SILENT');
const { sqsConsumer } = await import('./sqs-consumer.js');
const handler = sqsConsumer('schedule');

const jobId = (n: number) => `job_01JD7Z5C2Q9W8V6T4R2P0N8M${String(n).padStart(2, '0')}`;
const record = (messageId: string, body: string) => ({ messageId, body }) as SQSRecord;
const invoke = (...records: SQSRecord[]) =>
  handler({ Records: records } as SQSEvent, { functionName: 'scheduler' } as Context);

beforeEach(() => {
  schedule.mockReset().mockResolvedValue(1);
  send.mockReset().mockResolvedValue('dead-letter-id');
});

describe('sqsConsumer', () => {
  it('handles every record and reports no failure when all succeed', async () => {
    expect(
      await invoke(record('a', JSON.stringify({ jobId: jobId(1) })), record('b', `{"jobId":"${jobId(2)}"}`)),
    ).toEqual({ batchItemFailures: [] });
    expect(schedule.mock.calls).toEqual([[{ jobId: jobId(1) }], [{ jobId: jobId(2) }]]);
    expect(send).not.toHaveBeenCalled();
  });

  it('reports only the records whose failure a redelivery may fix', async () => {
    schedule.mockImplementation(async ({ jobId: id }) => {
      if (id === jobId(2)) throw new ContentionError('busy');
      if (id === jobId(3)) throw new Error('DynamoDB unreachable');
      return 1;
    });
    const response = await invoke(
      record('a', JSON.stringify({ jobId: jobId(1) })),
      record('b', JSON.stringify({ jobId: jobId(2) })),
      record('c', JSON.stringify({ jobId: jobId(3) })),
    );
    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'b' }, { itemIdentifier: 'c' }] });
    expect(send).not.toHaveBeenCalled();
  });

  it('moves a poison message to the dead-letter queue at once instead of failing it', async () => {
    const response = await invoke(record('a', 'not json'), record('b', JSON.stringify({ jobId: 'job_x' })));
    expect(response).toEqual({ batchItemFailures: [] });
    expect(send.mock.calls).toEqual([
      ['schedule-dlq', 'not json'],
      ['schedule-dlq', JSON.stringify({ jobId: 'job_x' })],
    ]);
    expect(schedule).not.toHaveBeenCalled();
  });

  it('dead-letters any non-retryable domain error, and retries the record when that send fails', async () => {
    schedule.mockRejectedValue(new NotFoundError('job_not_found', 'no such job'));
    send.mockRejectedValueOnce(new Error('SQS unreachable'));
    const response = await invoke(
      record('a', JSON.stringify({ jobId: jobId(1) })),
      record('b', JSON.stringify({ jobId: jobId(2) })),
    );
    expect(response).toEqual({ batchItemFailures: [{ itemIdentifier: 'a' }] });
    expect(send).toHaveBeenCalledTimes(2);
  });
});

describe('sqsConsumer metrics', () => {
  it('writes the handled, failed and dead-lettered counts as embedded metric format, per queue', async () => {
    const lines: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      lines.push(String(chunk));
      return true;
    });
    try {
      schedule.mockImplementation(async ({ jobId: id }) => {
        if (id === jobId(2)) throw new ContentionError('busy');
        return 1;
      });
      await invoke(
        record('a', JSON.stringify({ jobId: jobId(1) })),
        record('b', JSON.stringify({ jobId: jobId(2) })),
        record('c', 'not json'),
      );
    } finally {
      spy.mockRestore();
    }
    const emf = lines
      .flatMap((l) => l.split('\n'))
      .filter((l) => l.includes('"_aws"'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((m) => 'messages.handled' in m);
    expect(emf).toMatchObject({
      queue: 'schedule',
      'messages.handled': 2,
      'messages.failed': 1,
      'messages.deadLettered': 1,
    });
  });
});
