import { formatLogLine } from '../protocol/log-line.js';

/** Values attached to a log line; they become `key=value` pairs in text mode and fields in JSON mode. */
export type LogFields = Readonly<Record<string, string | number | boolean | undefined>>;

export type LogLevel = 'info' | 'warn' | 'error';

/** One line per event. The agent logs through this interface so tests can capture events. */
export interface Logger {
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export interface LineLoggerOptions {
  /** JSON lines (`{"time","level","msg",...fields}`) instead of human-readable text. */
  json: boolean;
  write?: (line: string) => void;
  now?: () => Date;
}

/** A logger writing one line per event (protocol/log-line.ts), to stderr unless `write` says otherwise. */
export function createLineLogger(options: LineLoggerOptions): Logger {
  const write = options.write ?? ((line: string) => process.stderr.write(line));
  const now = options.now ?? (() => new Date());
  const emit = (level: LogLevel, message: string, fields: LogFields = {}) => {
    write(`${formatLogLine({ ...fields, level, msg: message }, { json: options.json, now: now() })}\n`);
  };
  return {
    info: (message, fields) => emit('info', message, fields),
    warn: (message, fields) => emit('warn', message, fields),
    error: (message, fields) => emit('error', message, fields),
  };
}

/** A logger that drops everything (for tests and library use that do not care). */
export const silentLogger: Logger = { info: () => {}, warn: () => {}, error: () => {} };
