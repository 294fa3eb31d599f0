/** The `gpuai` executable (bin/gpuai.js loads this through tsx). */
import { nodeIo } from './io.js';
import { runCli } from './program.js';

// exitCode rather than process.exit(): pending writes to a piped stdout are flushed first.
process.exitCode = await runCli(process.argv.slice(2), nodeIo());
