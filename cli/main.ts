/** The `gpuai` executable (bin/gpuai.js loads this through tsx). */
import { nodeIo } from './io.js';
import { runCli } from './program.js';

// A reader that stops early (`gpuai jobs list | head`) closes the pipe: that is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(process.exitCode ?? 0);
  });
}

// exitCode rather than process.exit(): pending writes to a piped stdout are flushed first.
process.exitCode = await runCli(process.argv.slice(2), nodeIo());
