/**
 * One log line per event on stderr: `HH:MM:SS.mmm level message key=value ...`, or with
 * GPUAI_LOG_FORMAT=json one JSON object per line, always with `time`, `level` and `msg`. An entry
 * may bring its own `time` and `level` (the local agent's lines, passed through).
 */
export type Log = (entry: Record<string, unknown>) => void;

export function createLog(options: { json: boolean; write?: (line: string) => void }): Log {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  if (options.json) {
    return (entry) => write(JSON.stringify({ time: new Date().toISOString(), level: 'info', msg: '', ...entry }));
  }
  return ({ time, level = 'info', msg = '', ...rest }) => {
    const fields = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    const clock = (typeof time === 'string' ? time : new Date().toISOString()).slice(11, 23);
    write(`${clock} ${String(level).padEnd(5)} ${String(msg)}${fields ? ` ${fields}` : ''}`);
  };
}
