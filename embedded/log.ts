import { formatLogLine, type LogEntry } from '../protocol/log-line.js';

/**
 * One log line per event on stderr, in the format every GPUAI process writes (protocol/log-line.ts):
 * text, or with GPUAI_LOG_FORMAT=json one JSON object per line with `time`, `level` and `msg`. An
 * entry may bring its own `time` and `level` (the local agent's lines, passed through).
 */
export type Log = (entry: LogEntry) => void;

export function createLog(options: { json: boolean; write?: (line: string) => void }): Log {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  return (entry) => write(formatLogLine(entry, { json: options.json }));
}
