/** One log line per event on stderr: `HH:MM:SS.mmm level message key=value ...`, or JSON lines. */
export type Log = (entry: Record<string, unknown>) => void;

export function createLog(options: { json: boolean; write?: (line: string) => void }): Log {
  const write = options.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  if (options.json) return (entry) => write(JSON.stringify({ time: new Date().toISOString(), ...entry }));
  return ({ level = 'info', msg = '', ...rest }) => {
    const fields = Object.entries(rest)
      .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
      .join(' ');
    write(
      `${new Date().toISOString().slice(11, 23)} ${String(level).padEnd(5)} ${String(msg)}${fields ? ` ${fields}` : ''}`,
    );
  };
}
