/** `gpuai start`: run the embedded control plane (and an in-process agent) on this machine. */
import { resolve } from 'node:path';
import { Command } from 'commander';
import { isLoopback } from '../../embedded/host-check.js';
import { createLog } from '../../embedded/log.js';
import { type App, type CommandContext, defaultApiUrl } from '../context.js';
import type { EmbeddedServer } from '../embedded.js';
import { ExitCode, StartError, UsageError } from '../errors.js';
import { countFlag } from '../spec-flags.js';
import { examples } from './help.js';

interface StartOptions {
  port?: string;
  host?: string;
  dataDir?: string;
  agent: boolean;
  agentSlots: string;
}

/** The exit code of a process ended by a second Ctrl-C, as shells report SIGINT (128 + 2). */
const interruptedExitCode = 130;

const message = (error: unknown): string => (error instanceof Error ? error.message : String(error));

/**
 * What to do about the start failures a user can fix. Matched by name: importing the classes would
 * load the server's dependencies into every command.
 */
const remedies: Record<string, string> = {
  PortInUseError: 'choose another with --port (or $PORT)',
  DataDirLockedError: 'stop that one first, or choose another --data-dir',
};

/**
 * Where the launcher's own lines go. With GPUAI_LOG_FORMAT=json they are log entries like the control
 * plane's and its agent's, so that everything `gpuai start` prints is one JSON object per line.
 */
function launcherOutput(ctx: CommandContext) {
  const json = ctx.io.env.GPUAI_LOG_FORMAT === 'json';
  const log = createLog({ json: true, write: (line) => ctx.note(line) });
  return {
    json,
    /** A note on stderr; `styled` is the text form when it differs from the message. */
    note(level: 'info' | 'warn' | 'error', msg: string, styled = msg): void {
      if (json) log({ level, msg });
      else ctx.note(styled);
    },
    /** A failure: an error entry and exit status 1 in JSON, else the CLI's usual error line. */
    failed(text: string, cause: unknown): ExitCode {
      if (!json) throw new StartError(text, { cause });
      log({ level: 'error', msg: text });
      return ExitCode.failed;
    },
    log,
  };
}

async function start(ctx: CommandContext, options: StartOptions): Promise<ExitCode> {
  const port = countFlag('--port', options.port ?? (ctx.io.env.PORT || '8787'));
  if (port > 65_535) throw new UsageError(`--port must be at most 65535, got ${port}`);
  const agentSlots = countFlag('--agent-slots', options.agentSlots);
  if (agentSlots < 1) throw new UsageError('--agent-slots must be at least 1');
  const dataDir = resolve(options.dataDir ?? (ctx.io.env.GPUAI_DATA_DIR || '.gpuai'));
  const host = options.host ?? (ctx.io.env.GPUAI_HOST || '127.0.0.1');
  const output = launcherOutput(ctx);

  let server: EmbeddedServer;
  try {
    const startEmbedded = await ctx.io.loadEmbedded();
    server = await startEmbedded({
      port,
      host,
      dataDir,
      agent: options.agent,
      agentSlots,
      log: (line) => ctx.note(line),
    });
  } catch (error) {
    const remedy = error instanceof Error ? remedies[error.name] : undefined;
    return output.failed(
      `could not start the control plane on ${host}:${port}: ${message(error)}${remedy ? `; ${remedy}` : ''}`,
      error,
    );
  }

  if (!isLoopback(host)) {
    // On stderr, so it shows with --json too and never mixes into output that scripts read.
    const warning =
      `listening on ${host}: the API is reachable from the network, over plain ` +
      'HTTP. Only API keys protect it, and the local agent runs submitted commands as your user. Put TLS in ' +
      'front (a reverse proxy such as Caddy or nginx) or bind to 127.0.0.1; see docs/security.md.' +
      (ctx.io.env.GPUAI_ALLOWED_HOSTS?.trim()
        ? ''
        : ' The Host check (the DNS rebinding defence) is off, so any name that resolves here is answered: ' +
          'set GPUAI_ALLOWED_HOSTS to the names it is reached by.');
    output.note('warn', warning, `${ctx.style.yellow('warning:')} ${warning}`);
  }

  if (ctx.json) {
    ctx.outJson(JSON.stringify({ url: server.url, dataDir, agent: options.agent, agentSlots }));
  } else if (output.json) {
    output.log({ msg: 'ready; press Ctrl-C to stop', url: server.url, dataDir, agent: options.agent, agentSlots });
  } else {
    const agent = options.agent ? `an agent with ${agentSlots} slot(s)` : 'no agent';
    const api = server.url === defaultApiUrl ? '' : ` --api ${server.url}`;
    ctx.out(`${ctx.style.green('GPUAI control plane')} listening on ${ctx.style.bold(server.url)}`);
    ctx.out(ctx.style.dim(`data in ${dataDir}, ${agent}`));
    ctx.out('');
    ctx.out('Next, in another terminal:');
    ctx.out(`  npx gpuai${api} jobs submit --command "echo hello" --gpus 0`);
    ctx.out(`  npx gpuai${api} jobs list`);
    ctx.out(`  npx gpuai${api} nodes list`);
    ctx.out('');
    ctx.out(ctx.style.dim('Press Ctrl-C to stop.'));
  }

  return new Promise<ExitCode>((settle, fail) => {
    let stopping = false;
    const onSignal = (): void => {
      if (stopping) {
        output.note('warn', 'stopping now, without waiting');
        ctx.io.exit(interruptedExitCode);
        return;
      }
      stopping = true;
      output.note('info', 'stopping: finishing in-flight requests (Ctrl-C again to exit at once)');
      server.stop().then(
        () => {
          unsubscribe();
          settle(ExitCode.ok);
        },
        (error: unknown) => {
          unsubscribe();
          try {
            settle(output.failed(`the control plane did not stop cleanly: ${message(error)}`, error));
          } catch (failure) {
            fail(failure);
          }
        },
      );
    };
    const subscriptions = [ctx.io.onSignal('SIGINT', onSignal), ctx.io.onSignal('SIGTERM', onSignal)];
    const unsubscribe = (): void => {
      for (const off of subscriptions) off();
    };
  });
}

/** Builds `gpuai start`. */
export function startCommand(app: App): Command {
  return new Command('start')
    .summary('run the control plane (and an agent) on this machine')
    .description(
      'Run the control plane on this machine, with an in-process edge agent so jobs run here too. ' +
        'State is kept in --data-dir, so jobs survive a restart.\n\n' +
        'Ctrl-C (or SIGTERM) stops it cleanly; a second Ctrl-C exits at once.',
    )
    .option('--port <port>', 'port to listen on (default: $PORT, else 8787)')
    .option('--host <host>', 'address to listen on; 0.0.0.0 accepts other machines (default: $GPUAI_HOST or 127.0.0.1)')
    .option('--data-dir <dir>', 'where state is kept (default: $GPUAI_DATA_DIR, else ./.gpuai)')
    .option('--no-agent', 'run only the control plane; tasks wait for external agents')
    .option('--agent-slots <n>', 'how many tasks the in-process agent runs at once', '2')
    .addHelpText(
      'after',
      examples([
        'gpuai start',
        'gpuai start --port 9000 --data-dir /var/lib/gpuai',
        'gpuai start --host 0.0.0.0 --no-agent',
        'PORT=9000 npm start',
      ]),
    )
    .action(async (options: StartOptions, command: Command) => {
      app.exitCode = await start(app.context(command), options);
    });
}
