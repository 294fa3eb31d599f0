// Entry point of `gpuai-agent` (bin/gpuai-agent.js loads it through tsx): runs the CLI, exits with its status.
import { runCli } from './cli.js';

process.exitCode = await runCli(process.argv);
