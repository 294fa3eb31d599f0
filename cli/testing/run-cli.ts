/** Runs the CLI in-process for tests, with captured output and no real process effects. */
import { readFile } from 'node:fs/promises';
import type { CliIo } from '../io.js';
import { runCli } from '../program.js';

/** What a run left behind. */
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options of a test run: environment, terminal-ness, and any IO to replace. */
export interface TestRunOptions {
  env?: Record<string, string | undefined>;
  /** Pretend stdout and stderr are terminals. */
  tty?: boolean;
  io?: Partial<CliIo>;
}

/** Runs `gpuai args...` in-process. `exit` and `loadEmbedded` throw unless the test replaces them. */
export async function runGpuai(args: readonly string[], options: TestRunOptions = {}): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const tty = options.tty === true;
  const io: CliIo = {
    stdout: { write: (text: string) => (stdout += text), isTTY: tty },
    stderr: { write: (text: string) => (stderr += text), isTTY: tty },
    env: options.env ?? {},
    fetch: globalThis.fetch,
    now: () => Date.now(),
    sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    readFile: (path) => readFile(path, 'utf8'),
    onSignal: () => () => {},
    exit: (code) => {
      throw new Error(`unexpected exit(${code})`);
    },
    loadEmbedded: () => Promise.reject(new Error('no embedded control plane in this test')),
    ...options.io,
  };
  const code = await runCli(args, io);
  return { code, stdout, stderr };
}
