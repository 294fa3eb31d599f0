import { Agent, createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * How a cut network looks to a client: `reset` closes every connection as it opens (and the open
 * ones), so a request fails at once, as against a host that refuses; `hang` accepts connections and
 * never answers, as behind a dropped route, until {@link FaultProxy.restore}.
 */
export type CutMode = 'reset' | 'hang';

/** Which requests a queued fault applies to; default every request. */
export type RequestMatcher = (request: { method: string; path: string }) => boolean;

/** One request the proxy saw, and what it did with it. */
export interface ProxiedRequest {
  method: string;
  /** Path with query, as the client sent it. */
  path: string;
  at: number;
  outcome: 'forwarded' | 'rewritten' | 'failed' | 'garbled' | 'cut' | 'upstream-error';
  /** The status the client got; absent when it got none (cut, upstream down). */
  status?: number;
  /** The request body as text, once it has been read (its first {@link loggedBodyLimit} bytes). */
  body: string;
}

/** How much of each request body the log keeps. */
export const loggedBodyLimit = 64 * 1024;

/**
 * Turns the target's answer into what the client gets: the body text, the request it answers.
 * May be async; what it returns is sent with the target's status.
 */
export type ResponseRewrite = (body: string, request: { method: string; path: string }) => string | Promise<string>;

export interface FaultProxy {
  /** Base URL of the proxy (`http://127.0.0.1:<port>`), to give clients in place of the target's. */
  readonly url: string;
  /** Every request seen so far, oldest first. */
  readonly requests: readonly ProxiedRequest[];
  /** Connections a `reset` cut closed before any request was read (so absent from {@link requests}). */
  readonly connectionsCut: number;
  /** Added latency before each request is forwarded. */
  delayMs: number;
  /** Cuts the network: see {@link CutMode}. */
  cut(mode?: CutMode): void;
  /** Ends a cut; connections held by a `hang` cut are closed (their clients see a reset). */
  restore(): void;
  /** The next `n` matching requests get `status` with `body` (default: the API's error shape), unforwarded. */
  failNext(n: number, status: number, body?: unknown, when?: RequestMatcher): void;
  /** The next `n` matching requests get 200 with a body that is not JSON (or `body`), unforwarded. */
  garbleNext(n: number, body?: string, when?: RequestMatcher): void;
  /**
   * The next `n` matching requests are forwarded and the target's answer is rewritten by `rewrite`
   * (a tampered or corrupted answer the real server would never give). An answer without a body
   * (204) passes unchanged and does not count.
   */
  rewriteNext(n: number, rewrite: ResponseRewrite, when?: RequestMatcher): void;
  close(): Promise<void>;
}

interface QueuedFault {
  left: number;
  when: RequestMatcher;
  answer: { outcome: 'failed' | 'garbled'; status: number; contentType: string; body: string };
}

interface QueuedRewrite {
  left: number;
  when: RequestMatcher;
  rewrite: ResponseRewrite;
}

const everyRequest: RequestMatcher = () => true;

/**
 * An HTTP reverse proxy on a free loopback port in front of `target`, with faults switched at run
 * time, so tests meet outages and bad answers from the real server's address instead of a fake's.
 *
 * @example
 * const proxy = await startFaultProxy(server.url);
 * proxy.failNext(1, 503);          // the next request answers 503
 * proxy.cut();                     // every request fails to connect
 * proxy.restore();
 * await proxy.close();
 */
export async function startFaultProxy(target: string): Promise<FaultProxy> {
  const upstream = new URL(target);
  const basePath = upstream.pathname.replace(/\/$/, '');
  // No keep-alive upstream: a cut or close never leaves a pooled socket to the target behind.
  const upstreamAgent = new Agent({ keepAlive: false });
  const sockets = new Set<Socket>();
  const held = new Set<Socket>();
  const faults: QueuedFault[] = [];
  const rewrites: QueuedRewrite[] = [];
  const requests: ProxiedRequest[] = [];
  let cutMode: CutMode | undefined;
  let connectionsCut = 0;

  const take = <T extends { left: number; when: RequestMatcher }>(queue: T[], method: string, path: string) => {
    const found = queue.find((f) => f.left > 0 && f.when({ method, path }));
    if (!found) return undefined;
    found.left -= 1;
    if (found.left === 0) queue.splice(queue.indexOf(found), 1);
    return found;
  };

  const holdOrReset = (socket: Socket) => {
    if (cutMode === 'hang') held.add(socket);
    else socket.destroy();
  };

  const forward = (req: IncomingMessage, res: ServerResponse, entry: ProxiedRequest) => {
    if (cutMode) {
      entry.outcome = 'cut';
      holdOrReset(req.socket);
      return;
    }
    const out = httpRequest(
      {
        protocol: upstream.protocol,
        hostname: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: `${basePath}${req.url ?? '/'}`,
        headers: { ...req.headers, host: upstream.host },
        agent: upstreamAgent,
      },
      (answer) => {
        // A cut that began while the request was upstream swallows its answer, as a real one would.
        if (cutMode) {
          entry.outcome = 'cut';
          answer.resume();
          holdOrReset(req.socket);
          return;
        }
        entry.status = answer.statusCode ?? 502;
        const hasBody = entry.status !== 204 && entry.status !== 304;
        const rewrite = hasBody ? take(rewrites, entry.method, entry.path) : undefined;
        if (rewrite === undefined) {
          res.writeHead(entry.status, answer.headers);
          answer.pipe(res);
          return;
        }
        void rewriteAnswer(answer, rewrite.rewrite, entry).then(
          (text) => {
            const { 'content-length': _length, 'transfer-encoding': _encoding, ...headers } = answer.headers;
            res.writeHead(entry.status ?? 502, { ...headers, 'content-length': Buffer.byteLength(text) }).end(text);
          },
          () => req.socket.destroy(),
        );
      },
    );
    req.on('data', (chunk: Buffer) => {
      if (entry.body.length < loggedBodyLimit) entry.body += chunk.toString('utf8').slice(0, loggedBodyLimit);
    });
    out.on('error', () => {
      entry.outcome = 'upstream-error';
      // The target is down: the client sees its connection close, as it would without the proxy.
      req.socket.destroy();
    });
    req.pipe(out);
  };

  const server = createServer((req, res) => {
    const method = req.method ?? 'GET';
    const path = req.url ?? '/';
    const entry: ProxiedRequest = { method, path, at: Date.now(), outcome: 'forwarded', body: '' };
    requests.push(entry);
    if (cutMode) {
      entry.outcome = 'cut';
      holdOrReset(req.socket);
      return;
    }
    const fault = take(faults, method, path)?.answer;
    if (fault) {
      entry.outcome = fault.outcome;
      entry.status = fault.status;
      req.resume();
      res.writeHead(fault.status, { 'content-type': fault.contentType }).end(fault.body);
      return;
    }
    if (proxy.delayMs > 0) setTimeout(() => forward(req, res, entry), proxy.delayMs);
    else forward(req, res, entry);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => {
      sockets.delete(socket);
      held.delete(socket);
    });
    if (cutMode === 'reset') connectionsCut += 1;
    if (cutMode) holdOrReset(socket);
  });
  // A client that gives up on a hung connection must not crash the test process.
  server.on('clientError', (_error, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  const proxy: FaultProxy = {
    url: `http://127.0.0.1:${port}`,
    requests,
    get connectionsCut() {
      return connectionsCut;
    },
    delayMs: 0,
    cut(mode = 'reset') {
      cutMode = mode;
      // Connections already open (keep-alive, long polls in flight) are cut as well.
      for (const socket of sockets) holdOrReset(socket);
    },
    restore() {
      cutMode = undefined;
      for (const socket of held) socket.destroy();
      held.clear();
    },
    failNext(n, status, body = { error: { code: 'injected_fault', message: `fault proxy answered ${status}` } }, when) {
      if (n <= 0) return;
      faults.push({
        left: n,
        when: when ?? everyRequest,
        answer: {
          outcome: 'failed',
          status,
          contentType: typeof body === 'string' ? 'text/plain' : 'application/json',
          body: typeof body === 'string' ? body : JSON.stringify(body),
        },
      });
    },
    garbleNext(n, body = '<html>502 Bad Gateway</html> {"not":', when) {
      if (n <= 0) return;
      faults.push({
        left: n,
        when: when ?? everyRequest,
        answer: { outcome: 'garbled', status: 200, contentType: 'application/json', body },
      });
    },
    rewriteNext(n, rewrite, when) {
      if (n <= 0) return;
      rewrites.push({ left: n, when: when ?? everyRequest, rewrite });
    },
    async close() {
      cutMode = undefined;
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      upstreamAgent.destroy();
      await closed;
    },
  };
  return proxy;
}

async function rewriteAnswer(
  answer: IncomingMessage,
  rewrite: ResponseRewrite,
  entry: ProxiedRequest,
): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of answer) chunks.push(chunk as Buffer);
  const text = await rewrite(Buffer.concat(chunks).toString('utf8'), { method: entry.method, path: entry.path });
  entry.outcome = 'rewritten';
  return text;
}
