import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';

/**
 * Refuses a request body over `maxSize` bytes with 413, as hono's bodyLimit does, without making
 * every request pay for it. hono's middleware reads `c.req.raw.body` first, and on
 * @hono/node-server that one property turns the light request into a full WHATWG Request whose
 * body is a web stream over the socket; every handler then read its body through that stream. It
 * was the largest cost of the HTTP layer on the agents' routes (bench:dispatch). A request that
 * states its Content-Length (every client of this API) is checked from the header alone, and its
 * body is then read by the server's direct path; a body that comes without one (chunked) is still
 * counted as it streams in, by hono's middleware.
 */
export function boundedBody(maxSize: number): MiddlewareHandler {
  const streamed = bodyLimit({
    maxSize,
    onError: () => {
      throw tooLarge(maxSize);
    },
  });
  return async (c, next) => {
    const method = c.req.method;
    // No body is read for these (the server hands none on), as in hono's middleware.
    if (method === 'GET' || method === 'HEAD') return next();
    const length = c.req.header('content-length');
    if (length === undefined || c.req.header('transfer-encoding') !== undefined) return streamed(c, next);
    if (Number.parseInt(length, 10) > maxSize) throw tooLarge(maxSize);
    return next();
  };
}

const tooLarge = (maxSize: number) => new HTTPException(413, { message: `request body larger than ${maxSize} bytes` });
