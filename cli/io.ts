/**
 * Everything the CLI touches outside its own code: streams, environment, clock, network, files,
 * signals. Commands receive it instead of reaching for `process`, so tests run them in-process
 * with captured output against a control plane started in the test (cli/testing/control-plane.ts).
 */
import { readFile } from 'node:fs/promises';
import { loadEmbedded, type StartEmbedded } from './embedded.js';

/** An output stream; `isTTY` decides between interactive and plain output. */
export interface Terminal {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

/** The CLI's view of its process. */
export interface CliIo {
  readonly stdout: Terminal;
  readonly stderr: Terminal;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly fetch: typeof fetch;
  /** Epoch milliseconds. */
  now(): number;
  sleep(ms: number): Promise<void>;
  /** Reads a UTF-8 file; `-` is standard input. */
  readFile(path: string): Promise<string>;
  /** Subscribes to a signal; returns the unsubscribe function. */
  onSignal(signal: 'SIGINT' | 'SIGTERM', handler: () => void): () => void;
  /** Ends the process now, skipping pending work (a second Ctrl-C). */
  exit(code: number): void;
  loadEmbedded(): Promise<StartEmbedded>;
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/** The real process. */
export function nodeIo(): CliIo {
  return {
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
    fetch: globalThis.fetch,
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    readFile: (path) => (path === '-' ? readStdin() : readFile(path, 'utf8')),
    onSignal: (signal, handler) => {
      process.on(signal, handler);
      return () => process.off(signal, handler);
    },
    exit: (code) => process.exit(code),
    loadEmbedded,
  };
}
