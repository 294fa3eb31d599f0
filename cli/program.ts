/**
 * The `gpuai` command tree and its run loop: builds the commands, parses argv, and turns every
 * outcome into an exit code, rendering errors for people or, with `--json`, as the API's error
 * JSON on stderr.
 */
import { Command, CommanderError } from 'commander';
import packageJson from '../package.json' with { type: 'json' };
import { jobsCommand } from './commands/jobs.js';
import { keysCommand } from './commands/keys.js';
import { nodesCommand } from './commands/nodes.js';
import { startCommand } from './commands/start.js';
import { tokensCommand } from './commands/tokens.js';
import { App, defaultApiUrl } from './context.js';
import { CliError, ExitCode } from './errors.js';
import { createStyle, escapeControl } from './format.js';
import type { CliIo } from './io.js';

const rootHelp = `
Examples:
  $ gpuai start
  $ gpuai jobs submit --command "nvidia-smi" --gpus 1
  $ gpuai jobs submit --gpus H100:8 -- python train.py --lr 3e-4
  $ gpuai jobs wait job_01JD7Z5C2Q9W8V6T4R2P0N8M6K
  $ gpuai nodes list
  $ gpuai keys create --tenant acme --scopes submit,read --expires 30d

Environment:
  GPUAI_API       default for --api
  GPUAI_API_KEY   default for --api-key; else ~/.config/gpuai/credentials (see gpuai keys --help),
                  else the local admin key that gpuai start writes to $GPUAI_DATA_DIR/admin-key
  GPUAI_DATA_DIR  default for start --data-dir
  PORT            default for start --port
  NO_COLOR        set to turn colours off (they are only used on terminals)

Exit codes:
  0    ok
  1    the job failed or was cancelled (jobs wait), or the command failed
  2    usage error: bad flags, or a job spec that does not validate
  3    the control plane is unreachable
  4    the control plane answered with an error (e.g. 404 job_not_found)
  124  jobs wait timed out
`;

/**
 * Whether `--json` was asked for, read from argv directly: errors found while parsing (an unknown
 * option) must already come out as JSON. Arguments after `--` belong to the job's command.
 */
function wantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--');
  return (end < 0 ? argv : argv.slice(0, end)).includes('--json');
}

/** Builds the command tree for one run. Commander keeps parse state, so each run gets its own. */
export function createProgram(app: App, json: boolean): Command {
  const program = new Command('gpuai')
    .description('GPUAI: run GPU jobs on a decentralized network of edge nodes, and follow them.')
    .version(packageJson.version)
    .option('--api <url>', `control plane URL (default: $GPUAI_API, else ${defaultApiUrl})`)
    .option('--api-key <key>', 'API key (default: $GPUAI_API_KEY, the credentials file, or the local admin key)')
    .option('--json', "machine output: the API's JSON on stdout, errors as the API's error JSON on stderr")
    .addHelpText('after', rootHelp)
    .addCommand(jobsCommand(app))
    .addCommand(nodesCommand(app))
    .addCommand(keysCommand(app))
    .addCommand(startCommand(app))
    .addCommand(tokensCommand(app));

  // Subcommands built with `new Command` inherit no settings, so every level is configured here.
  const configure = (command: Command): void => {
    command
      .exitOverride()
      .configureHelp({ showGlobalOptions: true })
      .configureOutput({
        writeOut: (text) => app.io.stdout.write(text),
        writeErr: (text) => app.io.stderr.write(text),
        outputError: (text, write) =>
          write(
            json
              ? `${JSON.stringify({ error: { code: 'usage_error', message: text.trim().replace(/^error: /, '') } })}\n`
              : text,
          ),
      });
    if (!json) command.showHelpAfterError('(add --help for usage)');
    for (const sub of command.commands) configure(sub);
  };
  configure(program);
  return program;
}

function reportError(error: unknown, io: CliIo, json: boolean): number {
  if (error instanceof CommanderError) {
    // Commander has printed its message; help and --version exit 0, anything else is a usage error.
    return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  const style = createStyle(io.stderr.isTTY === true && !io.env.NO_COLOR);
  if (error instanceof CliError) {
    if (json) io.stderr.write(`${JSON.stringify(error.toErrorBody())}\n`);
    else
      io.stderr.write(
        // An API error's message and details come from the server: escape what a terminal would obey.
        [`${style.red('error:')} ${escapeControl(error.message)}`, ...error.detailLines().map((l) => escapeControl(l))]
          .map((l) => `${l}\n`)
          .join(''),
      );
    return error.exitCode;
  }
  // Anything else is a bug in the CLI: say so, with the stack to report.
  const message = error instanceof Error ? error.message : String(error);
  if (json) io.stderr.write(`${JSON.stringify({ error: { code: 'internal_error', message } })}\n`);
  else
    io.stderr.write(`${style.red('error:')} unexpected failure: ${error instanceof Error ? error.stack : message}\n`);
  return ExitCode.failed;
}

/**
 * Runs `gpuai` with `argv` (without the node and script paths) and returns the exit code. Never
 * throws: every failure is rendered on `io.stderr`.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const app = new App(io);
  const json = wantsJson(argv);
  try {
    await createProgram(app, json).parseAsync([...argv], { from: 'user' });
    return app.exitCode;
  } catch (error) {
    return reportError(error, io, json);
  }
}
