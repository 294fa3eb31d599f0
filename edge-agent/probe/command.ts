import { execFile } from 'node:child_process';

/** What running a vendor tool gave: its output, the fact that it is not installed, or why it failed. */
export type CommandOutcome =
  | { kind: 'ok'; stdout: string }
  | { kind: 'not-found' }
  | { kind: 'failed'; message: string };

/** Runs a program without a shell. Probes take one so that tests can replay captured output. */
export type CommandRunner = (file: string, args: readonly string[]) => Promise<CommandOutcome>;

const probeTimeoutMs = 15_000;

/** Runs the real program; a hung driver (nvidia-smi can block for minutes) is cut off after 15 s. */
export const runCommand: CommandRunner = (file, args) =>
  new Promise((resolve) => {
    execFile(
      file,
      args,
      { timeout: probeTimeoutMs, maxBuffer: 4 * 1024 * 1024, windowsHide: true },
      (error, stdout, stderr) => {
        if (error === null) {
          resolve({ kind: 'ok', stdout });
        } else if (error.code === 'ENOENT') {
          resolve({ kind: 'not-found' });
        } else {
          const detail = stderr.trim() || stdout.trim() || error.message;
          resolve({ kind: 'failed', message: `${file} failed: ${detail.split('\n')[0]}` });
        }
      },
    );
  });
