import type { ErrorBody } from '../protocol/index.js';

/**
 * DNS rebinding defence for the embedded server. A web page the user visits can point its own
 * host name at 127.0.0.1 and then call the local control plane from the browser; the browser
 * still sends the attacker's name in `Host`. A server bound to loopback is meant for this machine
 * only, so it answers only the names of this machine: `localhost`, `127.0.0.1`, `[::1]` (and the
 * address it is bound to) with its port, plus the names in `GPUAI_ALLOWED_HOSTS`. Bound to any
 * other address it takes every Host (it is meant to be reached by name from the network) unless
 * `GPUAI_ALLOWED_HOSTS` lists the names.
 */

/** Whether `host` (a bind address or a name) is this machine's loopback. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  return bare === 'localhost' || bare === '::1' || /^127(\.\d{1,3}){3}$/.test(bare);
}

/**
 * The Host header values the server answers, or `undefined` for any. An `extra` entry that is a
 * bare name is answered without a port (the scheme's default, as a reverse proxy on 80 or 443
 * sends it) and with the server's own port; `name:port` is answered with that port only (a proxy
 * on another port); `*` turns the check off.
 */
export function allowedHosts(bindHost: string, port: number, extra: readonly string[] = []): Set<string> | undefined {
  if (extra.includes('*')) return undefined;
  if (!isLoopback(bindHost) && extra.length === 0) return undefined;
  const names = new Set<string>();
  const add = (name: string) => {
    names.add(`${name}:${port}`);
    if (port === 80) names.add(name);
  };
  if (isLoopback(bindHost)) {
    for (const name of ['localhost', '127.0.0.1', '[::1]']) add(name);
    add(bindHost.includes(':') && !bindHost.startsWith('[') ? `[${bindHost}]` : bindHost);
  }
  for (const entry of extra) {
    const name = entry.trim().toLowerCase();
    if (name === '') continue;
    if (/:\d+$/.test(name) && !name.endsWith(']')) names.add(name);
    else {
      names.add(name);
      add(name);
    }
  }
  return new Set([...names].map((n) => n.toLowerCase()));
}

/** `GPUAI_ALLOWED_HOSTS`: comma-separated names or `name:port`. */
export const parseAllowedHosts = (text: string | undefined): string[] =>
  (text ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '');

/**
 * Wraps a fetch handler: a request whose Host is not allowed gets 421 Misdirected Request in the
 * API's error shape, and never reaches the app.
 */
export function guardHost<E>(
  allowed: Set<string> | undefined,
  fetch: (request: Request, env: E) => Response | Promise<Response>,
): (request: Request, env: E) => Response | Promise<Response> {
  if (allowed === undefined) return fetch;
  return (request, env) => {
    // @hono/node-server builds the URL from the Host header (or the bind address, without one).
    // The URL parser lowercases the name, so `LOCALHOST:8787` matches `localhost:8787`. A Host
    // without a port means port 80 (browsers always send a port that is not the scheme's default),
    // so a portless `127.0.0.1` is answered only by a server on port 80 (see allowedHosts).
    const host = new URL(request.url).host.toLowerCase();
    if (allowed.has(host)) return fetch(request, env);
    const body: ErrorBody = {
      error: {
        code: 'host_not_allowed',
        message:
          `this control plane answers only ${[...allowed].join(', ')}; ` +
          'set GPUAI_ALLOWED_HOSTS to add a name it is reached by',
      },
    };
    return new Response(JSON.stringify(body), { status: 421, headers: { 'content-type': 'application/json' } });
  };
}
