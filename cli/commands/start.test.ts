import { describe, expect, it } from 'vitest';
import type { EmbeddedOptions } from '../embedded.js';
import { runGpuai } from '../testing/run-cli.js';

/** A fake embedded control plane, and the signal plumbing a test can fire once `ready` resolves. */
function harness(stopDelayMs = 0) {
  const started: EmbeddedOptions[] = [];
  const handlers = new Map<string, () => void>();
  const exits: number[] = [];
  let stopped = 0;
  let onStarted: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onStarted = resolve;
  });
  const io = {
    loadEmbedded: async () => async (options: EmbeddedOptions) => {
      started.push(options);
      options.log('control plane listening');
      return {
        url: `http://${options.host}:${options.port}`,
        stop: async () => {
          await new Promise((resolve) => setTimeout(resolve, stopDelayMs));
          stopped += 1;
        },
      };
    },
    onSignal: (signal: string, handler: () => void) => {
      handlers.set(signal, handler);
      // Ready once both SIGINT and SIGTERM are handled: signals sent before that would be lost.
      if (handlers.size === 2) onStarted();
      return () => handlers.delete(signal);
    },
    exit: (code: number) => {
      exits.push(code);
    },
  };
  const signal = (name: 'SIGINT' | 'SIGTERM') => handlers.get(name)?.();
  return { io, started, ready, signal, exits, handlers, stopped: () => stopped };
}

describe('start', () => {
  it('takes PORT, GPUAI_HOST and GPUAI_DATA_DIR as the defaults of its flags, and flags over them', async () => {
    const env = { PORT: '9999', GPUAI_HOST: '0.0.0.0', GPUAI_DATA_DIR: '/tmp/gpuai-env-data' };
    for (const [args, expected] of [
      [['start'], { port: 9999, host: '0.0.0.0', dataDir: '/tmp/gpuai-env-data' }],
      [
        ['start', '--host', '127.0.0.2', '--port', '8000'],
        { port: 8000, host: '127.0.0.2', dataDir: '/tmp/gpuai-env-data' },
      ],
    ] as const) {
      const h = harness();
      const running = runGpuai([...args], { io: h.io, env });
      await h.ready;
      expect(h.started[0]).toMatchObject(expected);
      h.signal('SIGINT');
      expect((await running).code).toBe(0);
    }
  });

  it('warns on stderr when bound beyond loopback that the API is reachable from the network, and not otherwise', async () => {
    const runs: Record<string, { stdout: string; stderr: string }> = {};
    for (const host of ['0.0.0.0', '192.168.1.20', '::', '127.0.0.1', 'localhost', '::1']) {
      const h = harness();
      const running = runGpuai(['start', '--host', host, '--json'], { io: h.io });
      await h.ready;
      h.signal('SIGINT');
      const run = await running;
      expect(run.code).toBe(0);
      runs[host] = run;
    }
    for (const host of ['0.0.0.0', '192.168.1.20', '::']) {
      expect(runs[host]?.stderr).toContain(`warning: listening on ${host}: the API is reachable from the network`);
      expect(runs[host]?.stderr).toContain('Only API keys protect it');
      expect(runs[host]?.stderr).toMatch(/TLS/);
      // --json output stays one JSON document.
      expect(() => JSON.parse(runs[host]?.stdout ?? '')).not.toThrow();
    }
    for (const host of ['127.0.0.1', 'localhost', '::1']) expect(runs[host]?.stderr).not.toContain('warning');
    for (const host of ['0.0.0.0', '192.168.1.20', '::']) {
      expect(runs[host]?.stderr).toContain('The Host check (the DNS rebinding defence) is off');
      expect(runs[host]?.stderr).toContain('GPUAI_ALLOWED_HOSTS');
    }
  });

  it('bound beyond loopback with GPUAI_ALLOWED_HOSTS set, does not say the Host check is off', async () => {
    const h = harness();
    const running = runGpuai(['start', '--host', '0.0.0.0', '--json'], {
      io: h.io,
      env: { GPUAI_ALLOWED_HOSTS: 'gpu.lan' },
    });
    await h.ready;
    h.signal('SIGINT');
    const run = await running;
    expect(run.stderr).toContain('warning: listening on 0.0.0.0');
    expect(run.stderr).not.toContain('Host check');
  });

  it('starts the embedded control plane with the defaults, prints the next steps, stops on SIGINT', async () => {
    const h = harness();
    const running = runGpuai(['start'], { io: h.io, env: { GPUAI_DATA_DIR: '/tmp/gpuai-test-data' } });
    await h.ready;
    expect(h.started).toEqual([
      {
        port: 8787,
        host: '127.0.0.1',
        dataDir: '/tmp/gpuai-test-data',
        agent: true,
        agentSlots: 2,
        log: expect.any(Function),
      },
    ]);
    h.signal('SIGINT');
    const run = await running;
    expect(run.code).toBe(0);
    expect(h.stopped()).toBe(1);
    expect(h.handlers.size).toBe(0);
    expect(run.stdout).toContain('listening on http://127.0.0.1:8787');
    expect(run.stdout).toContain('npx gpuai jobs submit --command "echo hello" --gpus 0');
    expect(run.stderr).toContain('control plane listening\nstopping');
  });

  it('passes the flags through, takes PORT from the environment, and hints --api for another address', async () => {
    const h = harness();
    const running = runGpuai(
      ['start', '--host', '0.0.0.0', '--data-dir', '/srv/gpuai', '--no-agent', '--agent-slots', '4'],
      {
        io: h.io,
        env: { PORT: '9000' },
      },
    );
    await h.ready;
    expect(h.started[0]).toMatchObject({
      port: 9000,
      host: '0.0.0.0',
      dataDir: '/srv/gpuai',
      agent: false,
      agentSlots: 4,
    });
    h.signal('SIGTERM');
    const run = await running;
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('npx gpuai --api http://0.0.0.0:9000 jobs list');
  });

  it('exits at once on a second Ctrl-C', async () => {
    const h = harness(200);
    const running = runGpuai(['start', '--json', '--port', '0'], { io: h.io });
    await h.ready;
    h.signal('SIGINT');
    h.signal('SIGINT');
    expect(h.exits).toEqual([130]);
    const run = await running;
    expect(JSON.parse(run.stdout)).toMatchObject({ url: 'http://127.0.0.1:0', agent: true, agentSlots: 2 });
  });

  it('reports a failure to start (exit 1) and bad flags (exit 2)', async () => {
    const failing = await runGpuai(['start'], {
      io: { loadEmbedded: async () => () => Promise.reject(new Error('listen EADDRINUSE: address already in use')) },
    });
    expect(failing.code).toBe(1);
    expect(failing.stderr).toContain('could not start the control plane on 127.0.0.1:8787: listen EADDRINUSE');
    const port = await runGpuai(['start', '--port', '70000']);
    expect(port.code).toBe(2);
    expect(port.stderr).toContain('--port must be at most 65535');
  });
});
