import { Command, CommanderError, Option } from 'commander';
import type { NodeInventory } from '../protocol/index.js';
import { Agent } from './agent.js';
import {
  type AgentConfig,
  parseRegion,
  parseRunConfig,
  type RawRunOptions,
  runDefaults,
  supportedRuntimes,
} from './config.js';
import { ConfigError } from './errors.js';
import { createLineLogger } from './log.js';
import { type CommandRunner, probeInventory } from './probe/index.js';
import { describeTaskUser, resolveTaskUser, type TaskUserChoice } from './runner/task-user.js';
import { agentVersion } from './version.js';

/** Where the CLI writes, and how it probes; tests replace them. */
export interface CliIo {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  run?: CommandRunner;
}

/** Exit status for a command line or option that is wrong: nothing was started. */
export const usageExitCode = 2;

const processIo: CliIo = {
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};

/** Runs `gpuai-agent` with `argv` (as in process.argv) and resolves to the exit status. */
export async function runCli(argv: readonly string[], io: CliIo = processIo): Promise<number> {
  let exitCode = 0;
  const program = createProgram(io, (code) => {
    exitCode = code;
  });
  try {
    await program.parseAsync([...argv]);
    return exitCode;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : usageExitCode;
    if (error instanceof ConfigError) {
      io.stderr(`gpuai-agent: ${error.message}\n`);
      return usageExitCode;
    }
    io.stderr(`gpuai-agent: ${error instanceof Error ? error.message : String(error)}\n`);
    return 1;
  }
}

function createProgram(io: CliIo, setExitCode: (code: number) => void): Command {
  const program = new Command('gpuai-agent')
    .description("GPUAI edge agent: offers this machine's GPUs to a GPUAI control plane and runs the tasks it assigns.")
    .version(agentVersion)
    .configureOutput({ writeOut: io.stdout, writeErr: io.stderr })
    .exitOverride()
    .showHelpAfterError();

  program
    .command('run')
    .description('Register this node, then take, run and report tasks until SIGTERM or SIGINT.')
    .addOption(new Option('--api <url>', 'control plane URL, e.g. http://127.0.0.1:8787 (required)').env('GPUAI_API'))
    .addOption(
      new Option(
        '--runtime <runtime>',
        `how tasks run: ${supportedRuntimes.join(', ')} (required; process runs them as plain child processes, without isolation)`,
      ),
    )
    .addOption(
      new Option(
        '--data-dir <dir>',
        "keeps the node key (the node identity) (required); tasks' work dirs are made under the system temp dir, in gpuai-work-<uid>/<hash>, never here",
      ).env('GPUAI_AGENT_DATA_DIR'),
    )
    .addOption(
      new Option(
        '--task-user <user>',
        'user the process runtime runs tasks as: <name|uid>[:gid] (default when the agent runs as root: nobody; only root can switch users)',
      ).env('GPUAI_AGENT_TASK_USER'),
    )
    .option('--name <name>', 'display name of this node (1-64 characters)')
    .option('--region <region>', `region slug this node is in (default: ${runDefaults.region})`)
    .option('--slots <n>', `tasks run at once, 1-64 (default: ${runDefaults.slots})`)
    .option(
      '--poll-wait <seconds>',
      `how long each work poll is held open, 1-20 (default: ${runDefaults.pollWaitSeconds})`,
    )
    .option(
      '--grace-seconds <n>',
      `on SIGTERM/SIGINT, seconds running tasks may take to finish before they are released (default: ${runDefaults.graceSeconds})`,
    )
    .option('--json-logs', 'log JSON lines instead of text (logs go to stderr); short for --log-format json')
    .addOption(
      new Option('--log-format <format>', 'text or json, as the launcher takes it (default: text)')
        .choices(['text', 'json'])
        .env('GPUAI_LOG_FORMAT'),
    )
    .addOption(
      new Option(
        '--join-token <token>',
        "join token for this node's first registration (`gpuai tokens create`); the variable keeps it out of `ps`",
      ).env('GPUAI_JOIN_TOKEN'),
    )
    .addOption(
      new Option(
        '--tpm <tcti>',
        'attest with TPM 2.0 quotes (tpm2-tools) on this TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321',
      ).env('GPUAI_AGENT_TPM'),
    )
    .addOption(
      new Option(
        '--gpu-token-command <command>',
        "prints an NVIDIA GPU attestation token for the nonce in $GPUAI_ATTESTATION_NONCE (e.g. NVIDIA's local verifier)",
      ).env('GPUAI_AGENT_GPU_TOKEN_COMMAND'),
    )
    .option(
      '--gpu-token-file <path>',
      'file holding the NVIDIA GPU attestation token ({nonce} in the path is replaced)',
    )
    .option('--no-attest', 'do not attest: the node stays at level none and gets no job that requires more')
    .addHelpText(
      'after',
      [
        '',
        'Example:',
        '  GPUAI_JOIN_TOKEN=jt_... gpuai-agent run --api http://127.0.0.1:8787 --runtime process --data-dir ~/.gpuai-agent --slots 2',
        '',
        'SIGTERM or SIGINT stops taking work and waits --grace-seconds for running tasks; a second SIGINT',
        'kills them and exits at once.',
      ].join('\n'),
    )
    .action(async (options: RawRunOptions & { taskUser?: string }) => {
      const config = parseRunConfig(options);
      // Decided before anything starts: a --task-user that cannot be honoured is a usage error.
      const taskUser = resolveTaskUser(options.taskUser);
      setExitCode(await runAgent(config, taskUser, io));
    });

  program
    .command('probe')
    .description('Print the inventory this node would register: GPUs, CPU, memory, OS.')
    .option('--json', 'print the inventory as JSON (the RegisterNodeRequest inventory)')
    .option('--region <region>', `region to put in the inventory (default: ${runDefaults.region})`)
    .action(async (options: { json?: boolean; region?: string }) => {
      const { inventory, warnings } = await probeInventory({
        region: parseRegion(options.region),
        runtimes: [...supportedRuntimes],
        ...(io.run === undefined ? {} : { run: io.run }),
      });
      for (const warning of warnings) io.stderr(`warning: ${warning}\n`);
      io.stdout(options.json ? `${JSON.stringify(inventory, null, 2)}\n` : describeInventory(inventory));
    });

  return program;
}

/**
 * Runs the agent until a signal stops it. The first SIGTERM or SIGINT shuts down gracefully (exit
 * 0); a second SIGINT kills the tasks and exits at once (130, as shells report an interrupt).
 */
async function runAgent(config: AgentConfig, taskUser: TaskUserChoice, io: CliIo): Promise<number> {
  const logger = createLineLogger({ json: config.jsonLogs, write: io.stderr });
  if (taskUser.user !== undefined) logger.info(`the process runtime runs tasks as ${describeTaskUser(taskUser.user)}`);
  if (taskUser.warning !== undefined) logger.warn(taskUser.warning);
  const agent = new Agent({
    api: config.api,
    dataDir: config.dataDir,
    ...(taskUser.user === undefined ? {} : { taskUser: taskUser.user }),
    ...(config.name === undefined ? {} : { name: config.name }),
    region: config.region,
    slots: config.slots,
    pollWaitSeconds: config.pollWaitSeconds,
    graceSeconds: config.graceSeconds,
    ...(config.joinToken === undefined ? {} : { joinToken: config.joinToken }),
    logger,
    attestation: config.attestation,
  });
  let interrupted = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signal === 'SIGINT' && interrupted) {
      logger.warn('second SIGINT: killing running tasks and exiting now');
      agent.killNow();
      process.exit(130);
    }
    interrupted ||= signal === 'SIGINT';
    logger.info(`${signal} received`);
    void agent.shutdown();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    await agent.run();
    return 0;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

function describeInventory(inventory: NodeInventory): string {
  const lines = [
    `os       ${inventory.os} ${inventory.arch}${inventory.osVersion === undefined ? '' : ` (${inventory.osVersion})`}`,
    `cpu      ${inventory.cpu.cores} x ${inventory.cpu.model}`,
    `memory   ${inventory.memoryMiB} MiB`,
    `region   ${inventory.region}`,
    `runtimes ${inventory.runtimes.join(', ')}`,
  ];
  if (inventory.gpus.length === 0) lines.push('gpus     none detected');
  for (const gpu of inventory.gpus) {
    const details = [
      `${gpu.vramMiB} MiB`,
      gpu.computeCapability === undefined ? undefined : `compute ${gpu.computeCapability}`,
      gpu.gfxArch,
      gpu.driver === undefined ? undefined : `driver ${gpu.driver}`,
      gpu.uuid,
    ].filter((detail) => detail !== undefined);
    lines.push(`gpu ${String(gpu.index).padEnd(4)} ${gpu.vendor} ${gpu.model} (${details.join(', ')})`);
  }
  return `${lines.join('\n')}\n`;
}
