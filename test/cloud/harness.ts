import { createServer, type IncomingMessage, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteMessageBatchCommand, type Message, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyResultV2, Context, SQSBatchResponse, SQSEvent } from 'aws-lambda';
import { ThrottleRule } from '../emulators/emulators.js';

/**
 * A test harness that stands in for the AWS pieces around the Lambda handlers, so the real
 * handlers run in-process against the emulators: an API Gateway (HTTP API, payload 2.0) in front
 * of the api handler, SQS event sources in front of the queue consumers, and a counter of every
 * AWS request and of the time spent in each handler, for the cost model.
 */

export const lambdaContext = (functionName: string): Context =>
  ({
    functionName,
    functionVersion: '$LATEST',
    invokedFunctionArn: `arn:aws:lambda:us-east-1:000000000000:function:${functionName}`,
    memoryLimitInMB: '256',
    awsRequestId: crypto.randomUUID(),
    logGroupName: `/aws/lambda/${functionName}`,
    logStreamName: 'test',
    callbackWaitsForEmptyEventLoop: false,
    getRemainingTimeInMillis: () => 30_000,
    done: () => undefined,
    fail: () => undefined,
    succeed: () => undefined,
  }) as Context;

/** Milliseconds and invocations per handler (and per API route class). */
export class Meter {
  readonly invocations = new Map<string, { count: number; ms: number }>();
  /** AWS requests by service operation, e.g. `DynamoDB.PutItem`. */
  readonly requests = new Map<string, number>();
  add(name: string, ms: number): void {
    const entry = this.invocations.get(name) ?? { count: 0, ms: 0 };
    entry.count++;
    entry.ms += ms;
    this.invocations.set(name, entry);
  }
  countRequest(operation: string): void {
    this.requests.set(operation, (this.requests.get(operation) ?? 0) + 1);
  }
  reset(): void {
    this.invocations.clear();
    this.requests.clear();
  }
}

/** Builds the API Gateway v2 event for a request, as the HTTP API's Lambda integration sends it. */
export function apiGatewayEvent(
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: string,
): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    ...(url.search ? { queryStringParameters: Object.fromEntries(url.searchParams) } : {}),
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      domainName: url.host,
      domainPrefix: 'local',
      http: {
        method,
        path: url.pathname,
        protocol: 'HTTP/1.1',
        sourceIp: '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: crypto.randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: new Date().toUTCString(),
      timeEpoch: Date.now(),
    },
    ...(body ? { body, isBase64Encoded: false } : { isBase64Encoded: false }),
  };
}

// Loosely typed: hono's and @types/aws-lambda's event types disagree under strict tsc (TOOLCHAIN.md).
// biome-ignore lint/suspicious/noExplicitAny: the handler's own event type differs from @types/aws-lambda's
type ApiHandler = (event: any, context: Context) => Promise<unknown>;

/** Route classes for the meter: the node id and task id are folded away. */
export function routeClass(method: string, path: string): string {
  return `${method} ${path.replace(/node_[a-z2-7]{26}/, '{node}').replace(/job_[0-9A-Z]{26}(\.\d+)?/, '{id}')}`;
}

/** A local API Gateway: real HTTP in, one api-handler invocation per request. */
export async function startApiGateway(
  handler: ApiHandler,
  meter: Meter,
): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer(async (req, res) => {
    const body = await readBody(req);
    const url = new URL(req.url ?? '/', `http://${req.headers.host}`);
    const headers = Object.fromEntries(
      Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(',') : (v ?? '')]),
    );
    const started = performance.now();
    let result: APIGatewayProxyResultV2;
    try {
      result = (await handler(
        apiGatewayEvent(req.method ?? 'GET', url, headers, body),
        lambdaContext('api'),
      )) as APIGatewayProxyResultV2;
    } catch {
      // What an HTTP API answers when its Lambda function throws instead of answering.
      result = { statusCode: 500, body: JSON.stringify({ message: 'Internal Server Error' }) };
    }
    meter.add(routeClass(req.method ?? 'GET', url.pathname), performance.now() - started);
    if (typeof result === 'string') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(result);
      return;
    }
    const outHeaders = { ...(result.headers ?? {}) } as Record<string, string>;
    res.writeHead(result.statusCode ?? 200, outHeaders);
    res.end(
      result.body === undefined ? undefined : Buffer.from(result.body, result.isBase64Encoded ? 'base64' : 'utf8'),
    );
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

type SqsHandler = (event: SQSEvent, context: Context) => Promise<unknown>;

/** Builds an SQS event from messages actually received, as Lambda's event source mapping does. */
export function sqsEvent(queueArn: string, messages: readonly Message[]): SQSEvent {
  return {
    Records: messages.map((m) => ({
      messageId: m.MessageId ?? '',
      receiptHandle: m.ReceiptHandle ?? '',
      body: m.Body ?? '',
      attributes: {
        ApproximateReceiveCount: m.Attributes?.ApproximateReceiveCount ?? '1',
        SentTimestamp: m.Attributes?.SentTimestamp ?? String(Date.now()),
        SenderId: 'local',
        ApproximateFirstReceiveTimestamp: String(Date.now()),
      },
      messageAttributes: {},
      md5OfBody: '',
      eventSource: 'aws:sqs',
      eventSourceARN: queueArn,
      awsRegion: 'us-east-1',
    })),
  };
}

/**
 * One event source mapping: long-polls the queue, invokes the handler with a batch, deletes the
 * records it did not report as failures (partial batch response), leaves the rest to reappear.
 */
export function startEventSource(
  sqs: SQSClient,
  queueUrl: string,
  name: string,
  handler: SqsHandler,
  meter: Meter,
): { stop(): Promise<void> } {
  let running = true;
  const arn = `arn:aws:sqs:us-east-1:000000000000:${queueUrl.split('/').pop()}`;
  const loop = (async () => {
    while (running) {
      // As Lambda's event source mapping does, a failed receive, a failed invocation (a handler
      // that throws: Powertools' batch processor throws when every record of a batch failed) or a
      // failed delete is retried, never ends the mapping: what was not deleted reappears after its
      // visibility timeout.
      try {
        await pollOnce();
      } catch {
        if (running) await new Promise((r) => setTimeout(r, 200));
      }
    }
  })();
  async function pollOnce(): Promise<void> {
    const received = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: queueUrl,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        VisibilityTimeout: 5,
        MessageSystemAttributeNames: ['ApproximateReceiveCount', 'SentTimestamp'],
      }),
    );
    const messages = received.Messages ?? [];
    if (messages.length === 0) return;
    const started = performance.now();
    const response = ((await handler(sqsEvent(arn, messages), lambdaContext(name))) as
      | SQSBatchResponse
      | undefined) ?? {
      batchItemFailures: [],
    };
    meter.add(name, performance.now() - started);
    const failed = new Set(response.batchItemFailures.map((f) => f.itemIdentifier));
    const done = messages.filter((m) => !failed.has(m.MessageId ?? ''));
    if (done.length > 0) {
      await sqs.send(
        new DeleteMessageBatchCommand({
          QueueUrl: queueUrl,
          Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
        }),
      );
    }
  }
  return {
    async stop() {
      running = false;
      await loop.catch(() => undefined);
    },
  };
}

/**
 * A pass-through proxy in front of an emulator that counts each AWS request by operation
 * (`x-amz-target`, e.g. `DynamoDB_20120810.PutItem` becomes `DynamoDB.PutItem`), and can
 * simulate an outage of the service.
 */
export async function startCountingProxy(
  upstream: string,
  meter: Meter,
): Promise<{ url: string; close(): Promise<void>; outage(on: boolean): void; throttle: ThrottleRule }> {
  const target = new URL(upstream);
  let down = false;
  // Off until a test sets its fraction: answers a share of the requests as a throttled service does.
  const throttle = new ThrottleRule();
  const server = createServer((req, res) => {
    if (down) {
      // An outage of the service: every request fails with a retryable 503.
      req.resume();
      res.writeHead(503, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify({ __type: 'ServiceUnavailable', message: 'simulated outage' }));
      return;
    }
    const op = String(req.headers['x-amz-target'] ?? 'unknown');
    const throttled = throttle.answer(op);
    if (throttled !== undefined) {
      req.resume();
      res.writeHead(throttled.status, {
        'content-type': op.startsWith('DynamoDB_') ? 'application/x-amz-json-1.0' : 'application/x-amz-json-1.1',
      });
      res.end(JSON.stringify(throttled.body));
      return;
    }
    const [service = 'unknown', operation = op] = op.split('.');
    meter.countRequest(
      `${service.replace(/_\d+$/, '').replace('AmazonSQS', 'SQS').replace('TrentService', 'KMS')}.${operation}`,
    );
    const forward = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    forward.on('error', (error) => res.writeHead(502).end(String(error)));
    req.pipe(forward);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    outage: (on: boolean) => {
      down = on;
    },
    throttle,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}
