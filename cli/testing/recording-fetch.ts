/**
 * The CLI's fetch for tests: the global one, recording what the CLI sent (the fault proxy logs no
 * headers or bodies) and able to lose an answer after the server has handled the request.
 */

/** A request as the CLI sent it. */
export interface SentRequest {
  method: string;
  /** Path with query. */
  path: string;
  headers: Headers;
  body: string | undefined;
}

/** Which answers to lose. */
export type AnswerMatcher = (request: SentRequest, answer: Response) => boolean;

export interface RecordingFetch {
  fetch: typeof fetch;
  /** Every request sent through {@link fetch}, oldest first. */
  sent: SentRequest[];
  /**
   * The next `n` answers to requests matching `when` are lost after the server has handled them:
   * the CLI sees a dropped connection although the request took effect. The proxy cannot place
   * this fault at a chosen request, so it is done here, at the CLI's side of the wire.
   */
  loseAnswers(n: number, when?: AnswerMatcher): void;
}

export function recordingFetch(): RecordingFetch {
  const sent: SentRequest[] = [];
  const losses: { left: number; when: AnswerMatcher }[] = [];
  const recording = (async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input);
    const request: SentRequest = {
      method: init?.method ?? 'GET',
      path: `${url.pathname}${url.search}`,
      headers: new Headers(init?.headers),
      body: typeof init?.body === 'string' ? init.body : undefined,
    };
    sent.push(request);
    const response = await fetch(input, init);
    const loss = losses.find((l) => l.left > 0 && l.when(request, response));
    if (loss === undefined) return response;
    loss.left -= 1;
    await response.arrayBuffer();
    // What undici throws when the connection closes before the answer.
    throw new TypeError('fetch failed', { cause: Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) });
  }) as typeof fetch;
  return {
    fetch: recording,
    sent,
    loseAnswers(n, when = () => true) {
      losses.push({ left: n, when });
    },
  };
}
