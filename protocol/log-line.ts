/**
 * The log line every GPUAI process writes (the agent, the embedded launcher and its control plane),
 * one event per line. Text for people: `2026-01-02T03:04:05.678Z INFO  message key=value ...`; or
 * JSON for machines: one object with `time`, `level` and `msg` first, then the fields. The launcher
 * reads its agent's JSON lines back as entries (parseLogLine), so the two stay one format.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** An event: `msg` and optionally `level` (default info) and `time` (default now), then any fields. */
export type LogEntry = Readonly<Record<string, unknown>>;

export function formatLogLine(entry: LogEntry, options: { json: boolean; now?: Date }): string {
  const { time, level, msg, ...fields } = entry;
  const head = {
    time: typeof time === 'string' ? time : (options.now ?? new Date()).toISOString(),
    level: typeof level === 'string' ? level : 'info',
    msg: msg === undefined ? '' : String(msg),
  };
  if (options.json) return JSON.stringify({ ...head, ...fields });
  const suffix = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => ` ${key}=${formatValue(value)}`)
    .join('');
  return `${head.time} ${head.level.toUpperCase().padEnd(5)} ${head.msg}${suffix}`;
}

/** The entry a JSON log line holds, or undefined when the line is not one (a stack trace, a warning). */
export function parseLogLine(line: string): Record<string, unknown> | undefined {
  try {
    const parsed: unknown = JSON.parse(line);
    const isEntry = typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed) && 'msg' in parsed;
    return isEntry ? (parsed as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function formatValue(value: unknown): string {
  if (typeof value !== 'string') return JSON.stringify(value) ?? String(value);
  return value === '' || /[\s"=]/.test(value) ? JSON.stringify(value) : value;
}
