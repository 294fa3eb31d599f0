import { serve } from '@hono/node-server';

/** Something else listens on the address the control plane was asked to serve on. */
export class PortInUseError extends Error {
  override name = 'PortInUseError';
  constructor(
    readonly host: string,
    readonly port: number,
    options?: ErrorOptions,
  ) {
    super(`port ${port} on ${host} is already in use`, options);
  }
}

export type Fetch = (request: Request, env: unknown) => Response | Promise<Response>;
export type Server = ReturnType<typeof serve>;

/**
 * Binds the port before anything else is opened, so that a port someone else holds fails a start
 * that has touched nothing. Until `ready` hands over the app, requests are answered 503, which
 * every client retries: the window is the few milliseconds the store takes to open.
 */
export async function listen(host: string, port: number): Promise<{ server: Server; ready(fetch: Fetch): void }> {
  let handler: Fetch = () =>
    Response.json(
      { error: { code: 'starting', message: 'the control plane is starting; retry shortly' } },
      { status: 503, headers: { 'retry-after': '1' } },
    );
  const server = serve({ fetch: (request, env) => handler(request, env), port, hostname: host });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'EADDRINUSE' ? new PortInUseError(host, port, { cause: error }) : error),
    );
  });
  return {
    server,
    ready: (fetch) => {
      handler = fetch;
    },
  };
}

/** Stops listening and drops open connections. */
export function close(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.close(() => resolve());
    // Long polls would hold the server open for up to 20 s; agents retry them anyway.
    if ('closeAllConnections' in server) server.closeAllConnections();
  });
}
