import { describe, expect, it } from 'vitest';
import { formatLogLine, parseLogLine } from './log-line.js';

const now = new Date('2026-01-02T03:04:05.678Z');

describe('formatLogLine', () => {
  it('writes text for people: time, level, message, then key=value with spaced strings quoted', () => {
    const line = formatLogLine(
      { level: 'warn', msg: 'connection lost', api: 'http://x', why: 'reset by peer', tries: 3, skipped: undefined },
      { json: false, now },
    );
    expect(line).toBe('2026-01-02T03:04:05.678Z WARN  connection lost api=http://x why="reset by peer" tries=3');
  });

  it('writes JSON for machines with time, level and msg always there, info by default', () => {
    expect(JSON.parse(formatLogLine({ msg: 'started', slots: 2 }, { json: true, now }))).toEqual({
      time: '2026-01-02T03:04:05.678Z',
      level: 'info',
      msg: 'started',
      slots: 2,
    });
    expect(JSON.parse(formatLogLine({}, { json: true, now }))).toEqual({
      time: now.toISOString(),
      level: 'info',
      msg: '',
    });
  });

  it('keeps the time and level an entry brings, so a passed-through line keeps its own', () => {
    const agentLine = formatLogLine({ level: 'error', msg: 'boom', task: 't1' }, { json: true, now });
    const entry = parseLogLine(agentLine);
    expect(entry).toEqual({ time: now.toISOString(), level: 'error', msg: 'boom', task: 't1' });
    const later = new Date(now.getTime() + 60_000);
    expect(formatLogLine({ ...entry, source: 'agent' }, { json: false, now: later })).toBe(
      '2026-01-02T03:04:05.678Z ERROR boom task=t1 source=agent',
    );
  });
});

describe('parseLogLine', () => {
  it('is undefined for what is not a log entry: text, a stack frame, JSON without msg', () => {
    for (const line of ['plain text', '    at main (file.js:1:1)', '[1,2]', '"msg"', '{"level":"info"}', '{']) {
      expect(parseLogLine(line), line).toBeUndefined();
    }
  });
});
