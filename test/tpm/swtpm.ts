import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

/** A software TPM 2.0 on loopback, with its state in a temp dir. */
export interface Swtpm {
  /** The TCTI tpm2-tools and the agent's `--tpm` take. */
  tcti: string;
  port: number;
  stop(): Promise<void>;
}

/** Installs swtpm and tpm2-tools when missing (test/tpm/install.sh: apt-get, guarded by `command -v`). */
export function ensureTpmTools(): void {
  const script = resolve(import.meta.dirname, 'install.sh');
  try {
    execFileSync('bash', [script, '--check'], { stdio: 'ignore' });
  } catch {
    execFileSync('bash', [script], { stdio: 'inherit', timeout: 600_000 });
  }
}

/**
 * Starts `swtpm socket --tpm2` on two free consecutive loopback ports (the TCTI reaches the control
 * channel at port + 1), already initialised (`not-need-init,startup-clear`). The process belongs to the
 * test: `stop()` kills it by its pid and removes the state.
 */
export async function startSwtpm(): Promise<Swtpm> {
  const dir = await mkdtemp(join(tmpdir(), 'gpuai-swtpm-'));
  for (let attempt = 0; ; attempt++) {
    const port = await freePortPair();
    const child = spawn(
      'swtpm',
      [
        ...['socket', '--tpm2', '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`],
        ...['--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`, '--tpmstate', `dir=${dir}`],
        ...['--flags', 'not-need-init,startup-clear'],
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    if (await listening(port, child)) {
      return {
        tcti: `swtpm:host=127.0.0.1,port=${port}`,
        port,
        stop: async () => {
          await stopProcess(child);
          await rm(dir, { recursive: true, force: true });
        },
      };
    }
    await stopProcess(child);
    if (attempt >= 4) {
      await rm(dir, { recursive: true, force: true });
      throw new Error(`swtpm did not start: ${stderr.trim()}`);
    }
  }
}

/** A port p such that p and p + 1 were both free a moment ago. */
async function freePortPair(): Promise<number> {
  for (;;) {
    const port = await tryListen(0);
    if (port !== undefined && port < 65535 && (await tryListen(port + 1)) !== undefined) return port;
  }
}

function tryListen(port: number): Promise<number | undefined> {
  return new Promise((resolvePort) => {
    const server = createServer();
    server.once('error', () => resolvePort(undefined));
    server.listen(port, '127.0.0.1', () => {
      const address = server.address();
      const bound = typeof address === 'object' && address !== null ? address.port : undefined;
      server.close(() => resolvePort(bound));
    });
  });
}

async function listening(port: number, child: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) return false;
    const ok = await new Promise<boolean>((done) => {
      const socket = createConnection({ host: '127.0.0.1', port });
      socket.once('connect', () => {
        socket.destroy();
        done(true);
      });
      socket.once('error', () => done(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}
